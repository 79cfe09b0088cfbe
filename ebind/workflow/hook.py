"""StepHook: the worker → workflow bridge, fenced by attempt and generation.

The worker calls ``on_step_started`` before a DAG step's handler, ``on_step_done`` /
``on_step_failed`` before it acks / terminates the message. Ownership of a step is the
triple (generation, attempt, worker_id): ``generation`` travels in the envelope's
``trace_ctx`` (``ebind-generation``) and changes when the sweep re-enqueues a step, the
attempt is the message's delivery count. A completion from anyone but the current owner
is dropped and logged, and a result is written create-only *before* the record turns
``done``, so downstream steps never read a result that is later replaced.

Before any of that, a delivery must prove it is the scheduler's dispatch of the step
(:mod:`ebind.workflow.proof`): the record ``running`` at its generation with its digest.
A message that cannot is refused with ``StepUnproven`` and touches nothing; one whose
dispatch the record does not show yet is read again, then nak'd.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from ebind.crashpoints import crashpoint
from ebind.errors import StaleRevision, StepNotFound
from ebind.logging import get_logger
from ebind.payload import is_sealed, unseal
from ebind.wire import TaskEnvelope, TaskError
from ebind.worker.hook import StepFailedEarlier, StepUnproven
from ebind.workflow._transient import is_transient
from ebind.workflow.events import event_subject, marshal_event
from ebind.workflow.liveness import Announcer, Liveness
from ebind.workflow.local import LocalDispatches
from ebind.workflow.proof import (
    GENERATION_KEY,
    StepVerdict,
    dispatch_digest,
    envelope_generation,
    step_verdict,
)
from ebind.workflow.protocols import EventBus, StateStore
from ebind.workflow.types import (
    DEFAULT_MAX_STEP_ERROR_BYTES,
    DAGMeta,
    DAGStatus,
    Event,
    EventKind,
    StepRecord,
    StepStatus,
)

__all__ = [
    "GENERATION_KEY",
    "PROOF_DELIVERIES",
    "StepHook",
    "envelope_generation",
    "truncate_error",
]

_log = get_logger("ebind.workflow.hook")
PROOF_DELIVERIES = 3
"""Deliveries after which a message whose dispatch the step record never shows is dead-lettered."""
# Reads of the record (seconds to wait before each) while it is behind the message or the
# dispatch's CAS is in flight: about 0.4 s in all before the delivery is nak'd.
_READ_BACKOFF = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
_CAS_ATTEMPTS = 5
# Extra tries (backing off to 2 s, about 20 s in all) when the store times out or has no
# leader: a JetStream leader election takes seconds.
_TRANSIENT_ATTEMPTS = 12
_NULL = b"null"
_RESULT_STORE = "result_store"
"""Error kind of a step whose handler succeeded but whose result could not be stored."""


def _now() -> datetime:
    return datetime.now(UTC)


def truncate_error(message: str, limit: int) -> str:
    """Cut ``message`` to at most ``limit`` UTF-8 bytes, the "…" marker included.

    The cut falls on a character boundary. ``limit == 0`` means DEFAULT_MAX_STEP_ERROR_BYTES;
    a negative limit keeps nothing; a limit too small for the marker gets no marker.
    """
    if limit < 0:
        return ""
    limit = limit or DEFAULT_MAX_STEP_ERROR_BYTES
    raw = message.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return message
    room = limit - len(_CUT_MARK) if limit >= len(_CUT_MARK) else limit
    # errors="ignore" drops a trailing partial character, i.e. cuts at a rune start.
    kept = raw[:room].decode("utf-8", "ignore")
    return kept + "…" if limit >= len(_CUT_MARK) else kept


_CUT_MARK = "…".encode()


def owns(rec: StepRecord, env: TaskEnvelope, digest: str | None = None) -> bool:
    """Whether ``env``'s delivery is the step's current owner (the attempt fence).

    Within one generation (one task message) the delivery count only grows, so a later
    delivery supersedes an earlier one: the record may still name the earlier attempt
    when this delivery's own ``running`` write never landed (a timeout during a leader
    election, or the fast path that skips it). An earlier attempt than the record's,
    another generation, no generation or another envelope than the one dispatched is
    always refused.
    """
    gen = envelope_generation(env)
    if rec.status is not StepStatus.RUNNING or gen is None or gen != rec.generation:
        return False
    if digest is None:
        digest = dispatch_digest(env)
    if not rec.dispatch_digest or rec.dispatch_digest != digest:
        return False
    if rec.attempt < env.attempt:
        return True
    return rec.attempt == env.attempt and rec.worker_id in ("", env.worker_id)


@dataclass
class _Claim:
    """A started delivery whose ``running`` record may not be written yet."""

    rec: StepRecord
    rev: int
    attempt: int
    worker_id: str
    lost: bool = False
    timer: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = None
    generation: int | None = None
    """The dispatch the delivery belongs to: a same-numbered attempt on the same worker
    can belong to another dispatch (a DAG deleted and submitted again with its id)."""

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


class StepHook:
    """Persists step starts and outcomes to the store and publishes completion events.

    Args:
        store: the state store.
        bus: the event bus.
        max_step_error_bytes: cap for persisted failure messages (0 → default, <0 → none).
        liveness: where to announce running steps (None disables the announcements).
        liveness_interval: seconds between announcements.
        release_grace: seconds a step whose delivery was handed back (nak'd) stays announced
            after its redelivery is due (default: five liveness intervals).
        start_write_delay: a step's ``running`` record (attempt, worker) is written only
            if it has not finished after this many seconds; a fast step goes straight
            from dispatched to done in one CAS from the revision read at start, which
            keeps the fence and saves a write on the critical path (0: always write).
        local: the dispatches of the engine in this process: a first delivery of one of
            them is proven by what that dispatch wrote, without reading the record
            (see ebind.workflow.local).
    """

    def __init__(
        self,
        store: StateStore,
        bus: EventBus,
        *,
        max_step_error_bytes: int = DEFAULT_MAX_STEP_ERROR_BYTES,
        liveness: Liveness | None = None,
        liveness_interval: float = 3.0,
        start_write_delay: float = 0.05,
        release_grace: float | None = None,
        local: LocalDispatches | None = None,
    ) -> None:
        self._store = store
        self._local = local
        self._bus = bus
        self._max_err = max_step_error_bytes
        self._tracker = Announcer(liveness, liveness_interval, release_grace)
        self._start_delay = start_write_delay
        self._claims: dict[tuple[str, str], _Claim] = {}
        self._flushing: set[asyncio.Task[None]] = set()

    def set_concurrency(self, worker_id: str, concurrency: int) -> None:
        """Bound ``worker_id``'s liveness record by the steps it can run at once."""
        self._tracker.set_concurrency(worker_id, concurrency)

    def announced(self, worker_id: str) -> list[str]:
        """The steps ``worker_id``'s next liveness beat lists (``<dag>:<step>``)."""
        return self._tracker.listed(worker_id)

    def on_step_released(self, env: TaskEnvelope, redeliver_in: float = 0.0) -> None:
        """This delivery was handed back without an outcome: drop its claim and announcement.

        The step stays announced until its redelivery is due (plus the grace): the record
        still names this worker until the next delivery starts. A release from an older
        delivery of the step (another attempt or generation) leaves a newer claim alone.
        """
        if not (env.dag_id and env.step_id):
            return
        key = (env.dag_id, env.step_id)
        gen = envelope_generation(env)
        claim = self._claims.get(key)
        if claim is not None and (claim.attempt, claim.worker_id, claim.generation) == (
            env.attempt,
            env.worker_id,
            gen,
        ):
            del self._claims[key]
            if claim.timer is not None and claim.task is None:
                # Write the ``running`` record now rather than never: it names the attempt
                # that ran, as it would have had the handler taken longer.
                claim.timer.cancel()
                task = asyncio.get_running_loop().create_task(self._start_write(claim))
                self._flushing.add(task)
                task.add_done_callback(self._flushing.discard)
        self._tracker.release(
            env.worker_id, f"{env.dag_id}:{env.step_id}", (env.attempt, gen), redeliver_in
        )

    async def close(self) -> None:
        """Stop the liveness announcements and pending start writes."""
        for claim in self._claims.values():
            claim.cancel()
        self._claims.clear()
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)
        await self._tracker.close()

    def _claim(self, env: TaskEnvelope, rec: StepRecord, rev: int) -> None:
        """Remember this delivery's start; write it only if the step outlives the delay."""
        key = (env.dag_id, env.step_id)
        old = self._claims.pop(key, None)
        if old is not None:
            old.cancel()
        claim = _Claim(
            rec=rec,
            rev=rev,
            attempt=env.attempt,
            worker_id=env.worker_id,
            generation=envelope_generation(env),
        )
        loop = asyncio.get_running_loop()
        claim.timer = loop.call_later(self._start_delay, self._write_start, key, claim)
        self._claims[key] = claim
        self._tracker.add(env.worker_id, f"{env.dag_id}:{env.step_id}", _token(env))

    def _write_start(self, key: tuple[str, str], claim: _Claim) -> None:
        if self._claims.get(key) is claim:
            claim.task = asyncio.get_running_loop().create_task(self._start_write(claim))

    async def _start_write(self, claim: _Claim) -> None:
        rec = claim.rec
        try:
            claim.rev = await self._store.put_step(rec.dag_id, rec.step_id, rec, claim.rev)
            crashpoint("step.after_started")
        except Exception as exc:  # stale: someone else owns it now; the finish path fences
            claim.lost = True
            _log.info(
                "step.start_write_failed", dag_id=rec.dag_id, step_id=rec.step_id, error=repr(exc)
            )

    async def _settle_claim(self, env: TaskEnvelope) -> _Claim | None:
        claim = self._claims.get((env.dag_id, env.step_id))
        mine = (env.attempt, env.worker_id, envelope_generation(env))
        if claim is None or (claim.attempt, claim.worker_id, claim.generation) != mine:
            return None
        del self._claims[(env.dag_id, env.step_id)]
        if claim.timer is not None:
            claim.timer.cancel()
        if claim.task is not None:
            await asyncio.gather(claim.task, return_exceptions=True)
        return None if claim.lost else claim

    def _digest(self, env: TaskEnvelope) -> str:
        """The dispatch digest of ``env`` as the scheduler computed it, over plaintext.

        With a payload codec the scheduler digests the resolved arguments before they are
        sealed for publishing (tokens differ on every seal), so the delivered payload is
        opened first; a payload that cannot be opened proves nothing.
        """
        codec = getattr(self._store, "codec", None)
        if codec is None or not is_sealed(bytes(env.payload)):
            return dispatch_digest(env)
        try:
            opened = unseal(codec, bytes(env.payload), "step arguments")
        except Exception:
            return ""
        return dispatch_digest(msgspec.structs.replace(env, payload=msgspec.Raw(opened)))

    async def on_step_started(self, env: TaskEnvelope) -> bool:
        """Claim the step for this delivery; False means skip the handler and ack.

        Raises:
            StepUnproven: the message is not the scheduler's dispatch of the step (see
                :mod:`ebind.workflow.proof`); the worker dead-letters it untouched.
            StaleRevision: the record did not show the message's dispatch in time; the
                worker naks it, and a later delivery reads again.
        """
        if not (env.dag_id and env.step_id):
            return True
        gen = envelope_generation(env)
        if gen is None:  # nothing to read: no record can prove it
            raise StepUnproven(self._unproven(env, "the message carries no dispatch generation"))
        digest = self._digest(env)
        if self._local is not None and env.attempt <= 1:
            # Dispatched by the engine in this process moments ago, with this digest, and
            # its CAS acknowledged: that record is what a read would return.
            mine = await self._local.proof(env.dag_id, env.step_id, gen, digest)
            if mine is not None and await self._begin(env, *mine):
                return True
        verdict, got, meta = StepVerdict.BEHIND, None, None
        for i, pause in enumerate(_READ_BACKOFF):
            if pause:
                await asyncio.sleep(pause)
            got, meta = await self._read_start(env)
            verdict, why = step_verdict(got, meta, gen, digest)
            if verdict is StepVerdict.UNPROVEN:
                raise StepUnproven(self._unproven(env, why))
            if verdict in (StepVerdict.BEHIND, StepVerdict.AWAIT):
                continue  # a replica behind, or the dispatch's CAS in flight: read again
            if got is None or verdict is not StepVerdict.RUN:
                await self._decline(env, verdict, got)
                _raise_if_failed_here(got, gen, env.attempt)
                return False
            if await self._begin(env, *got):
                return True
            await asyncio.sleep(0.05 * (i + 1))
        return await self._not_shown(env, verdict, got is None and meta is not None)

    async def _begin(self, env: TaskEnvelope, rec: StepRecord, rev: int) -> bool:
        """Start the proven step from ``rec`` at ``rev``; False if its ``running`` CAS lost."""
        new = msgspec.structs.replace(
            rec,
            status=StepStatus.RUNNING,
            attempt=env.attempt,
            worker_id=env.worker_id,
            started_at=_now(),
        )
        if self._start_delay > 0:
            self._claim(env, new, rev)
            return True
        try:
            await self._store.put_step(env.dag_id, env.step_id, new, rev)
        except StaleRevision:
            return False
        crashpoint("step.after_started")
        self._tracker.add(env.worker_id, f"{env.dag_id}:{env.step_id}", _token(env))
        return True

    async def _not_shown(self, env: TaskEnvelope, verdict: StepVerdict, no_step: bool) -> bool:
        """Settle a delivery whose reads never showed its dispatch (or whose CAS kept losing)."""
        if no_step:
            # Still no step while its DAG record exists: not a lagging replica but a
            # half-finished delete_dag. Drop it rather than nak it forever.
            await self._decline(env, StepVerdict.ORPHAN, None)
            return False
        if env.attempt >= PROOF_DELIVERIES and verdict is not StepVerdict.RUN:
            # A dispatch's CAS lands in milliseconds and a replica catches up in seconds;
            # a record that still does not show it after this many deliveries never will
            # (the revision was guessed, or the step is gated by a signal, breakpoint or
            # its dependencies, so the scheduler dispatches nothing from it).
            raise StepUnproven(
                self._unproven(
                    env,
                    f"no dispatch at generation {envelope_generation(env)} appeared in the "
                    f"step record after {env.attempt} deliveries ({verdict.value})",
                )
            )
        raise StaleRevision(dag_id=env.dag_id, step_id=env.step_id)

    @staticmethod
    def _unproven(env: TaskEnvelope, why: str) -> str:
        _log.warning(
            "step.unproven_message",
            dag_id=env.dag_id,
            step_id=env.step_id,
            generation=env.trace_ctx.get(GENERATION_KEY),
            reason=why,
        )
        return f"message for DAG {env.dag_id!r} step {env.step_id!r} is not its dispatch: {why}"

    async def _decline(
        self, env: TaskEnvelope, verdict: StepVerdict, got: tuple[StepRecord, int] | None
    ) -> None:
        """Settle a delivery that must not run (see ``step_verdict``)."""
        if got is None:
            _log.warning("step.orphan_message", dag_id=env.dag_id, step_id=env.step_id)
            return
        rec, rev = got
        if verdict is StepVerdict.TERMINAL:
            await self._republish(rec)
        elif verdict is StepVerdict.CANCELED:
            await self._cancel_unstarted(rec, rev)
        else:
            _log.info(
                "step.stale_message",
                dag_id=env.dag_id,
                step_id=env.step_id,
                generation=envelope_generation(env),
                current=rec.generation,
            )

    async def _read_start(
        self, env: TaskEnvelope
    ) -> tuple[tuple[StepRecord, int] | None, DAGStatus | None]:
        """The step's record and revision (None if absent) and its DAG's status, read at once."""
        snap = await self._store.read_dag(env.dag_id, [env.step_id])
        return snap.steps.get(env.step_id), snap.meta[0].status if snap.meta else None

    async def _cancel_unstarted(self, rec: StepRecord, rev: int) -> None:
        new = msgspec.structs.replace(rec, status=StepStatus.CANCELED, finished_at=_now())
        try:
            await self._store.put_step(rec.dag_id, rec.step_id, new, rev)
        except StaleRevision:
            return  # someone else moved it; the redelivery or the sweep settles it
        _log.info("step.canceled_before_start", dag_id=rec.dag_id, step_id=rec.step_id)

    async def on_step_done(self, env: TaskEnvelope, result: bytes) -> None:
        """Write the result (create-only), mark the step done, publish ``completed``."""
        if not (env.dag_id and env.step_id):
            return
        data = bytes(result).strip() or _NULL
        await self._finish(env, StepStatus.DONE, data, "", "")

    async def on_step_failed(self, env: TaskEnvelope, error: TaskError) -> None:
        """Mark the step failed with its error kind and truncated message, publish ``completed``."""
        if not (env.dag_id and env.step_id):
            return
        message = truncate_error(error.message, self._max_err)
        await self._finish(env, StepStatus.FAILED, None, error.kind, message)

    async def _finish(
        self, env: TaskEnvelope, status: StepStatus, data: bytes | None, kind: str, message: str
    ) -> None:
        fields = {"status": status, "error_kind": kind, "error_message": message}
        key = f"{env.dag_id}:{env.step_id}"
        try:
            claim = await self._settle_claim(env)
            if claim is not None:
                new = msgspec.structs.replace(claim.rec, **fields, finished_at=_now())
                if await self._finish_fast(claim, new, data):
                    self._tracker.discard(env.worker_id, key)
                    return
            # The slow path writes the result again: create-only with identical bytes is a
            # no-op if the fast path stored it, and stores it if that write was lost.
            await self._finish_slow(env, fields, data)
        except BaseException:
            # The worker naks this delivery: stop announcing the step, so that if no
            # redelivery ever comes (message terminated or lost) the sweep sees it
            # orphaned instead of running forever. A redelivery announces it again.
            self._tracker.discard(env.worker_id, key)
            raise

    async def _finish_slow(
        self, env: TaskEnvelope, fields: dict[str, Any], data: bytes | None
    ) -> None:
        """Read, fence by ownership, write the result once, CAS the outcome.

        Five tries against concurrent writers (StaleRevision); timeouts and leaderless
        moments (a cluster election) earn more, backing off, since each try re-reads
        the record and so settles whatever the previous one left half-written.
        """
        last: Exception | None = None
        for i in range(_CAS_ATTEMPTS + _TRANSIENT_ATTEMPTS):
            if i >= _CAS_ATTEMPTS and last is not None and not is_transient(last):
                break  # out of CAS retries; only transient trouble earns more
            if i:
                await asyncio.sleep(min(0.05 * 2**i, 2.0))
            try:
                await self._finish_once(env, fields, data)
            except StaleRevision as exc:
                last = exc
            except Exception as exc:
                if not is_transient(exc):
                    raise
                last = exc  # the write may have landed: the next read tells
            else:
                return
        if last is not None and not isinstance(last, StaleRevision):
            raise last
        raise StaleRevision(dag_id=env.dag_id, step_id=env.step_id)

    async def _finish_once(
        self, env: TaskEnvelope, fields: dict[str, Any], data: bytes | None
    ) -> None:
        """One read-fence-write round of the slow path; raises to ask for another."""
        dag_id, step_id, status = env.dag_id, env.step_id, fields["status"]
        key = f"{dag_id}:{step_id}"
        try:
            rec, rev = await self._store.get_step(dag_id, step_id)
        except StepNotFound:
            _log.warning("step.orphan_result", dag_id=dag_id, step_id=step_id)
            return
        mine = (
            rec.attempt == env.attempt
            and rec.worker_id in ("", env.worker_id)
            and envelope_generation(env) in (None, rec.generation)
        )
        if rec.status is status and mine:
            # Our own earlier write landed (its reply may have been lost) but the result
            # or the event may not have: write the result again (identical bytes are
            # accepted) and publish the event again.
            if data is not None:
                await self._put_result(dag_id, step_id, data, rec.run_id)
            self._tracker.discard(env.worker_id, key)
            await self._republish(rec)
            return
        if not owns(rec, env, self._digest(env)):
            _log.warning(
                "step.outcome_fenced",
                dag_id=dag_id,
                step_id=step_id,
                attempt=env.attempt,
                owner_attempt=rec.attempt,
                status=rec.status.value,
                outcome=status.value,
            )
            self._tracker.discard(env.worker_id, key)
            return
        if data is not None:
            await self._put_result(dag_id, step_id, data, rec.run_id)
            crashpoint("step.after_result")
        new = msgspec.structs.replace(
            rec, **fields, worker_id=env.worker_id, attempt=env.attempt, finished_at=_now()
        )
        await self._store.put_step(dag_id, step_id, new, rev)
        crashpoint("step.after_done")
        self._tracker.discard(env.worker_id, key)
        await self._republish(new)

    async def _finish_fast(self, claim: _Claim, new: StepRecord, data: bytes | None) -> bool:
        """Result, record and event in one pipelined round trip; False: use the slow path.

        The three writes leave in this order on one connection, so the result is stored
        before the record says done, and the record before the event (a clustered store
        may apply them out of order: readers re-read briefly, and retry). The CAS from the
        start revision is the fence: if it fails nothing was completed by this delivery.
        """
        dag_id, step_id = new.dag_id, new.step_id
        local = self._local
        pending = (
            local.finishing(dag_id, step_id, new.attempt)
            if local is not None and local.leading and data is not None
            else None
        )
        try:
            return await self._finish_pipelined(claim, new, data)
        finally:
            if pending is not None and local is not None:
                local.unfinishing(dag_id, step_id, pending)

    async def _finish_pipelined(self, claim: _Claim, new: StepRecord, data: bytes | None) -> bool:
        """The body of :meth:`_finish_fast`."""
        dag_id, step_id = new.dag_id, new.step_id
        # This coroutine publishes the first write before it yields; the tasks publish
        # theirs at that yield, in creation order: result, record, event (and meta read).
        step_t = asyncio.ensure_future(self._store.put_step(dag_id, step_id, new, claim.rev))
        pub_t = asyncio.ensure_future(self._bus.publish(*_completed(new)))
        meta_t = self._meta_read_ahead(dag_id, data)
        res_err: BaseException | None = None
        stored = False
        if data is not None:
            try:
                stored = await self._put_result(dag_id, step_id, data, new.run_id)
            except Exception as exc:
                res_err = exc
        step_out = await self._record_written(step_t, pub_t, new, data if stored else None, meta_t)
        pub_out: BaseException | None = None
        try:
            await pub_t
        except Exception as exc:
            pub_out = exc
        if isinstance(step_out, StaleRevision):
            return False
        if isinstance(step_out, Exception) and is_transient(step_out):
            # Unknown outcome (the CAS may have landed): the slow path re-reads the record
            # and finishes whichever way it went, writing the result again if needed.
            _log.info("step.finish_retry", dag_id=dag_id, step_id=step_id, error=repr(step_out))
            return False
        if isinstance(step_out, BaseException):
            raise step_out
        if isinstance(res_err, Exception) and is_transient(res_err):
            assert data is not None
            # The record says done, so the result must be stored: retry the create-only
            # write (identical bytes are accepted if the first one landed after all).
            res_err = await self._retry_result(dag_id, step_id, data, new.run_id)
        if isinstance(res_err, BaseException):
            await self._result_lost(new, step_out, res_err)
        elif isinstance(pub_out, BaseException):
            raise pub_out  # the worker naks; the redelivery republishes for the done record
        return True

    def _meta_read_ahead(
        self, dag_id: str, data: bytes | None
    ) -> asyncio.Future[tuple[DAGMeta, int]] | None:
        """A read of the DAG's meta, sent with the completion writes, for a leader here.

        Only while this process leads the scheduler and only for a ``done`` step: its pass
        starts from this completion (ebind.workflow.local) and reads nothing else.
        """
        local = self._local
        if data is None or local is None or not local.leading:
            return None
        # Many completions of one DAG at once (a fan-out's leaves) share the read in
        # flight: their pass is one, and needs one meta.
        fut = local.meta_reading(dag_id)
        if fut is None:
            fut = asyncio.ensure_future(self._store.get_meta(dag_id))
            fut.add_done_callback(_retrieve)
            local.reading_meta(dag_id, fut)
        return fut

    async def _record_written(
        self,
        step_t: asyncio.Future[int],
        pub_t: asyncio.Future[None],
        new: StepRecord,
        stored: bytes | None,
        meta_t: asyncio.Future[tuple[DAGMeta, int]] | None = None,
    ) -> int | Exception:
        """The record CAS's revision or error; notes a ``done`` step whose result is stored.

        Noted before the event's acknowledgement: the leader's pass for the event, if it
        runs in this process, starts from the note, and need not read back what was just
        written (ebind.workflow.local).
        """
        try:
            rev = await step_t
        except Exception as exc:
            return exc
        except BaseException:
            pub_t.cancel()
            raise
        if stored is not None and self._local is not None:
            self._local.finished(new, rev, stored, meta_t)
        return rev

    async def _retry_result(
        self, dag_id: str, step_id: str, data: bytes, run_id: str
    ) -> Exception | None:
        """Write a result until it is stored or the error is not transient; None: stored."""
        exc: Exception | None = None
        for i in range(_TRANSIENT_ATTEMPTS):
            await asyncio.sleep(min(0.05 * 2**i, 2.0))
            try:
                await self._put_result(dag_id, step_id, data, run_id)
            except Exception as err:
                exc = err
                if not is_transient(err):
                    return err
                continue
            return None
        return exc

    async def _result_lost(self, rec: StepRecord, rev: int, exc: BaseException) -> None:
        # The record turned done but its result could not be stored (e.g. too large for
        # the bucket): fail the step so no dependent waits for a result that never comes.
        _log.error(
            "step.result_not_stored", dag_id=rec.dag_id, step_id=rec.step_id, error=repr(exc)
        )
        failed = msgspec.structs.replace(
            rec,
            status=StepStatus.FAILED,
            error_kind=_RESULT_STORE,
            error_message=truncate_error(f"result not stored: {exc}", self._max_err),
        )
        await self._store.put_step(rec.dag_id, rec.step_id, failed, rev)
        await self._republish(failed)

    async def _put_result(self, dag_id: str, step_id: str, data: bytes, run_id: str) -> bool:
        """Store the result once; False if another owner's (different) result was kept."""
        try:
            await self._store.put_result(dag_id, step_id, data, run_id)
        except StaleRevision:
            # An earlier owner's result is already stored; first write wins so that every
            # reader (and every downstream step) sees one value.
            _log.warning("step.result_kept", dag_id=dag_id, step_id=step_id)
            return False
        return True

    async def _republish(self, rec: StepRecord) -> None:
        if rec.status in (StepStatus.DONE, StepStatus.FAILED):
            await self._bus.publish(*_completed(rec))


def _raise_if_failed_here(got: tuple[StepRecord, int] | None, gen: int, attempt: int) -> None:
    """Raise StepFailedEarlier if the record says an earlier delivery of this message failed it.

    Only a later delivery of the message whose handler failed the step owes its dead letter:
    its delivery count is past the attempt on record. Another message of the same dispatch
    (a re-send by the sweep, a copy from a producer) starts again at delivery 1, and a step
    failed because its result could not be stored was acked, not dead-lettered.
    """
    if got is None:
        return
    rec = got[0]
    if (
        rec.status is StepStatus.FAILED
        and rec.generation == gen
        and 0 < rec.attempt < attempt
        and rec.error_kind != _RESULT_STORE
    ):
        error = TaskError(kind=rec.error_kind or "failed", message=rec.error_message)
        raise StepFailedEarlier(error, rec.attempt)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a read-ahead's failure as seen: its user falls back to a read of its own."""
    if not fut.cancelled():
        fut.exception()


def _token(env: TaskEnvelope) -> tuple[int, int | None]:
    """The delivery an announcement belongs to: its attempt and dispatch generation."""
    return env.attempt, envelope_generation(env)


def _completed(rec: StepRecord) -> tuple[str, bytes]:
    """Subject and body of the ``completed`` event for a terminal record."""
    ev = Event(
        kind=EventKind.COMPLETED,
        dag_id=rec.dag_id,
        step_id=rec.step_id,
        status=rec.status,
        error_kind=rec.error_kind,
        error_message=rec.error_message,
        attempt=rec.attempt,
    )
    return event_subject(ev), marshal_event(ev)
