"""Dispatches and completions made by this process, so that it need not read them back.

A worker proves a step message by reading the step record: ``running`` at the message's
generation with its digest (``ebind.workflow.proof``). When the scheduler that dispatched
the step runs in the same process as the worker that receives it, that process already
knows what the read would show: it built the envelope, took its digest and wrote the
record that proves it, and the store acknowledged that compare-and-set at a known
revision. The worker then starts from that record and revision instead of asking the
server, which takes one request off a step's critical path.

What keeps this as strict as the read:

- an entry is made by the engine only, in memory; a message matches only if its
  generation and digest are the ones the engine dispatched, so a forged or altered
  message never matches and is read as before;
- the entry proves nothing until the store has acknowledged the dispatch's CAS; a CAS
  that failed or timed out settles it empty, and the worker reads;
- it is used once, by the first delivery, and only within ``window`` seconds of the
  dispatch: a redelivery, or a message that waited in the stream (time in which a
  cancel, a sweep or another worker may have written the record), is read as before.

A cancel that lands within the window after a step's dispatch is treated as if it had
landed right after the worker's read: the step runs like any step that had already
started, and its outcome is still written by a CAS from the dispatch's revision, which
fails if anyone wrote the record meanwhile.

The other way round, when a step finishes ``done`` in the process that leads the
scheduler, the leader's pass for its completion event would read back the record and the
result this process has just written. A ``done`` record never changes again and a result
is written once, so the worker notes both (only once the store acknowledged the record's
CAS and stored this very result) and the pass reads only the DAG's meta record, which it
always reads. Failed steps are not noted: ``retry`` can put them back to pending, and the
pass must see that.

While this process leads the scheduler it does not wait for that completion event at
all: the worker sends a read of the DAG's meta in the same flush as its completion writes
and, once the store has acknowledged the record's CAS, hands the completion to the
scheduler (``on_finished``), whose pass uses that meta read. An event that overtakes the
acknowledgement waits for it (``wait_finished``) instead of reading the store; whichever
of the two reaches the scheduler second finds the pass made (``take_advanced``) and is
answered without another.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from ebind.workflow.types import DAGMeta, StepRecord

__all__ = ["Finished", "LocalDispatches"]

Written = tuple[StepRecord, int] | None
"""The record a dispatch wrote and its revision; None when its CAS did not land."""


@dataclass
class _Entry:
    generation: int
    digest: str
    at: float
    written: asyncio.Future[Written] = field(repr=False)


@dataclass
class Finished:
    """A step this process's worker finished ``done``: its record, revision and result."""

    rec: StepRecord
    rev: int
    result: bytes
    at: float
    meta: asyncio.Future[tuple[DAGMeta, int]] | None = field(default=None, repr=False)
    """The DAG's meta, read in the same flush as the completion writes (None: not read)."""


class LocalDispatches:
    """What this process dispatched and finished, so that it need not read it back.

    Dispatches serve the worker's first delivery of a step; steps finished ``done`` serve
    the engine's pass on their completion event.
    """

    def __init__(self, window: float = 0.1, limit: int = 4096) -> None:
        self.window = window
        self.limit = limit
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._done: OrderedDict[tuple[str, str], Finished] = OrderedDict()
        self._advanced: OrderedDict[tuple[str, str, int], float] = OrderedDict()
        self._meta_reads: dict[str, asyncio.Future[tuple[DAGMeta, int]]] = {}
        self._finishing: dict[tuple[str, str], tuple[int, asyncio.Future[None]]] = {}
        self.on_finished: Callable[[str, str, int], None] | None = None
        """Set by the scheduler while it leads: called with (dag, step, attempt) for every
        completion noted here, so the pass need not wait for the completion event."""

    def __len__(self) -> int:
        return len(self._entries)

    def expect(self, dag_id: str, step_id: str, generation: int, digest: str) -> _Entry:
        """Record a dispatch about to be sent; settle it once its CAS has an outcome."""
        now = time.monotonic()
        self._expire(now)
        key = (dag_id, step_id)
        old = self._entries.pop(key, None)
        if old is not None and not old.written.done():
            old.written.set_result(None)
        entry = _Entry(generation, digest, now, asyncio.get_running_loop().create_future())
        self._entries[key] = entry
        return entry

    @staticmethod
    def settle(entry: _Entry, written: Written) -> None:
        """The dispatch's CAS landed (``written``) or did not (None)."""
        if not entry.written.done():
            entry.written.set_result(written)

    async def proof(self, dag_id: str, step_id: str, generation: int, digest: str) -> Written:
        """What this process's dispatch of the step wrote, if that proves the delivery.

        It does when generation and digest match, the CAS was acknowledged and the
        window has not passed. The entry is used up either way: any later delivery reads the record.
        """
        entry = self._entries.pop((dag_id, step_id), None)
        if entry is None or entry.generation != generation or entry.digest != digest:
            return None
        left = self.window - (time.monotonic() - entry.at)
        if left <= 0:
            return None
        # The message can arrive before the CAS's acknowledgement (both were sent at once):
        # wait for it, within the window, rather than read a record that may not show it.
        try:
            async with asyncio.timeout(left):
                return await asyncio.shield(entry.written)
        except TimeoutError:
            return None

    @property
    def leading(self) -> bool:
        """Whether this process's scheduler takes completions straight from its worker."""
        return self.on_finished is not None

    def meta_reading(self, dag_id: str) -> asyncio.Future[tuple[DAGMeta, int]] | None:
        """A read of the DAG's meta sent with an earlier completion and not answered yet."""
        fut = self._meta_reads.get(dag_id)
        return fut if fut is not None and not fut.done() else None

    def reading_meta(self, dag_id: str, fut: asyncio.Future[tuple[DAGMeta, int]]) -> None:
        """Remember ``fut`` as the DAG's meta read in flight until it is answered."""
        reads = self._meta_reads
        reads[dag_id] = fut
        fut.add_done_callback(lambda f: reads.pop(dag_id, None) if reads.get(dag_id) is f else None)

    def finishing(self, dag_id: str, step_id: str, attempt: int) -> asyncio.Future[None]:
        """The worker is about to write ``attempt``'s completion; resolved once it knows.

        A pass for the step's completion event that starts meanwhile (the event can
        overtake the worker's acknowledgements) waits for it rather than read a record
        whose CAS may not have landed yet. The worker must call :meth:`unfinishing`.
        """
        fut = asyncio.get_running_loop().create_future()
        self._finishing[(dag_id, step_id)] = (attempt, fut)
        return fut

    def unfinishing(self, dag_id: str, step_id: str, fut: asyncio.Future[None]) -> None:
        """The worker's completion is settled (noted with :meth:`finished`, or not)."""
        key = (dag_id, step_id)
        got = self._finishing.get(key)
        if got is not None and got[1] is fut:
            del self._finishing[key]
        if not fut.done():
            fut.set_result(None)

    async def wait_finished(self, dag_id: str, step_id: str, attempt: int) -> Finished | None:
        """:meth:`take_finished`, after waiting for a completion still being written.

        Only for a completion of ``attempt`` the worker here has begun to write, and at
        most the window.
        """
        got = self._finishing.get((dag_id, step_id))
        if got is not None and got[0] == attempt and not got[1].done():
            try:
                async with asyncio.timeout(self.window):
                    await asyncio.shield(got[1])
            except TimeoutError:
                return None
        return self.take_finished(dag_id, step_id, attempt)

    def finished(
        self,
        rec: StepRecord,
        rev: int,
        result: bytes,
        meta: asyncio.Future[tuple[DAGMeta, int]] | None = None,
    ) -> None:
        """The worker's CAS turned ``rec`` done at ``rev``, after it stored ``result``."""
        now = time.monotonic()
        done = self._done
        while done:
            key, first = next(iter(done.items()))
            if now - first.at <= self.window and len(done) < self.limit:
                break
            del done[key]
        key = (rec.dag_id, rec.step_id)
        done.pop(key, None)
        done[key] = Finished(rec, rev, result, now, meta)
        waiting = self._finishing.pop(key, None)
        if waiting is not None and not waiting[1].done():
            waiting[1].set_result(None)  # a pass waiting in wait_finished takes the note
        notify = self.on_finished
        if notify is not None:
            notify(rec.dag_id, rec.step_id, rec.attempt)

    def take_finished(self, dag_id: str, step_id: str, attempt: int) -> Finished | None:
        """The record, revision and result noted for a completion of ``attempt``, if fresh.

        Used up either way; a later event for the step reads the store.
        """
        got = self._done.pop((dag_id, step_id), None)
        if got is None or got.rec.attempt != attempt:
            return None
        if time.monotonic() - got.at > self.window:
            return None
        return got

    def advanced(self, dag_id: str, step_id: str, attempt: int) -> None:
        """A pass that used the note of this process's completion of ``attempt`` succeeded."""
        now = time.monotonic()
        notes = self._advanced
        while notes:
            key, at = next(iter(notes.items()))
            if now - at <= self.window and len(notes) < self.limit:
                break
            del notes[key]
        notes[(dag_id, step_id, attempt)] = now

    def take_advanced(self, dag_id: str, step_id: str, attempt: int) -> bool:
        """Whether a completion of ``attempt`` was already advanced by a pass here.

        A completion reaches the scheduler twice (from the worker here, and as the event)
        and the first pass uses the note; this answers the other one. Used up either way:
        a later event (a republished completion) gets a pass of its own.
        """
        at = self._advanced.pop((dag_id, step_id, attempt), None)
        return at is not None and time.monotonic() - at <= self.window

    def _expire(self, now: float) -> None:
        """Drop entries past the window (steps that ran elsewhere) and any over the limit."""
        entries = self._entries
        while entries:
            key, entry = next(iter(entries.items()))
            if now - entry.at <= self.window and len(entries) < self.limit:
                break
            del entries[key]
            if not entry.written.done():
                entry.written.set_result(None)
