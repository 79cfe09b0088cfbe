"""Dispatches made by this process, so that its own worker can prove them without a read.

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
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from ebind.workflow.types import StepRecord

__all__ = ["LocalDispatches"]

Written = tuple[StepRecord, int] | None
"""The record a dispatch wrote and its revision; None when its CAS did not land."""


@dataclass
class _Entry:
    generation: int
    digest: str
    at: float
    written: asyncio.Future[Written] = field(repr=False)


class LocalDispatches:
    """The step dispatches of this process's engine, for its worker's first delivery."""

    def __init__(self, window: float = 0.1, limit: int = 4096) -> None:
        self.window = window
        self.limit = limit
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

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
