"""The imperative shell around DAGState: load one DAG, advance it, persist exactly what changed.

``Engine.advance`` is the one routine behind submit, every scheduler event and every sweep,
so all paths apply the same rules: re-apply cascades, fence pending steps while pausing,
dispatch ready steps, flip pausing → paused when nothing is in flight, finalize a DAG
whose steps are all terminal, and mark breakpoints that were hit. Dispatch resolves a
step's arguments and target *before* it CASes the step to ``running`` (no phantom
running), sets its generation to the revision it dispatches from and its dispatch digest
to that of the envelope it sends, and publishes with msg-id ``<dag>:<step>:<generation>``
in the same round trip as the CAS (right after the CAS's acknowledgement when more steps
are ready at once than the engine has lanes).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from ebind._jsreq import PubAck
from ebind.crashpoints import crashpoint
from ebind.errors import (
    InvalidName,
    PayloadTooLarge,
    PlacementError,
    ResolveError,
    StaleRevision,
)
from ebind.logging import get_logger
from ebind.queues import check_priority, check_queue
from ebind.validate import MAX_NESTING, too_deep
from ebind.wire import ErrorKind, TaskEnvelope
from ebind.workflow._lanes import in_lanes
from ebind.workflow._transient import is_leaderless
from ebind.workflow.cache import ResultCache, StateCache
from ebind.workflow.events import event_subject, marshal_event
from ebind.workflow.history import drop_live
from ebind.workflow.local import LocalDispatches
from ebind.workflow.placement import resolve_placement
from ebind.workflow.proof import GENERATION_KEY, dispatch_digest
from ebind.workflow.protocols import Enqueuer, EventBus, StateStore
from ebind.workflow.redispatch import SentLedger
from ebind.workflow.ref import find_refs, resolve_args
from ebind.workflow.resubmit import stray_steps
from ebind.workflow.state import DAGState
from ebind.workflow.types import (
    BPState,
    DAGMeta,
    DAGStatus,
    Event,
    EventKind,
    Ref,
    StepRecord,
    StepStatus,
)

__all__ = ["Engine", "Loaded", "TransientError", "unenqueueable"]

_log = get_logger("ebind.workflow.scheduler")
_MAX_ROUNDS = 32
# Tries of one enqueue while the tasks stream has no leader (backing off to 1 s: ~5 s).
_LEADERLESS_RETRIES = 8


def unenqueueable(step_id: str, exc: PayloadTooLarge) -> tuple[str, str]:
    """Error kind and message of a step whose task message the server refuses as too large."""
    return (ErrorKind.ENCODE.value, f"step {step_id!r} cannot be enqueued: {exc}")


class TransientError(Exception):
    """Something that a later retry of the same evaluation is expected to get past."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Loaded:
    """One DAG as read from the store: state, revisions and the meta revision."""

    state: DAGState
    revs: dict[str, int]
    meta_rev: int
    enqueued: list[str] = field(default_factory=list)
    hint: set[str] | None = None
    """Steps that just completed: only their dependents can have become ready."""
    dependents: dict[str, list[str]] | None = None
    noted: list[str] = field(default_factory=list)
    """Completed steps whose record and result came from this process's worker."""


@dataclass
class _Dispatch:
    """What one dispatch sends: the task envelope and the step's ``running`` record."""

    env: TaskEnvelope
    rec: StepRecord


class Engine:
    """Loads, advances and persists one DAG at a time (callers serialize per DAG)."""

    def __init__(
        self,
        store: StateStore,
        bus: EventBus,
        enqueuer: Enqueuer,
        *,
        lanes: int = 64,
        local: LocalDispatches | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.enqueuer = enqueuer
        self._lanes = asyncio.Semaphore(lanes)
        self._lane_count = lanes
        self.states = StateCache()
        self.results = ResultCache()
        self.sent = SentLedger()
        """Stream sequence of each step message this process sent (see redispatch)."""
        self.local = local
        """Where dispatches are noted for a worker in this process (see ebind.workflow.local)."""

    async def load(self, dag_id: str, events: Sequence[Event] = ()) -> Loaded:
        """The DAG's state, from the cache when ``events`` are completions of known steps.

        The cached path re-reads only the meta and the steps the events name; anything
        else reads the DAG in full (one filtered listing).
        """
        cached = self.states.get(dag_id)
        ids = list(dict.fromkeys(e.step_id for e in events))
        completions = bool(ids) and all(e.kind is EventKind.COMPLETED for e in events)
        if cached is None or not completions or any(sid not in cached.state.steps for sid in ids):
            full = await self._load_full(dag_id)
            if completions:
                # The listing has the records; a note still spares reading a result.
                known = await self._finished_here(dag_id, events, full.state.meta.run_id)
                for sid, (rec, rev) in known.items():
                    if rev > full.revs.get(sid, 0):  # listed before the worker's CAS landed
                        full.state.steps[sid], full.revs[sid] = rec, rev
                full.noted = list(known)
                # Completions can only have readied their own dependents. Looking at every
                # pending step here would also dispatch roots that a submit of a large DAG
                # is still dispatching: each such race costs a failed CAS and another full
                # read. Steps nothing completes for are the submit's and the sweep's.
                full.hint = set(ids)
            return full
        run = cached.state.meta.run_id
        # Steps this process's worker just finished done: their record and result are
        # known (ebind.workflow.local), so only the meta is read for them, and that read
        # was usually sent along with the worker's completion writes.
        metas: list[asyncio.Future[tuple[DAGMeta, int]]] = []
        known = await self._finished_here(dag_id, events, run, metas)
        unknown = [sid for sid in ids if sid not in known]
        # The completed steps' results are what their dependents need next: read in the
        # same request as the records (a step nothing depends on needs no result read).
        wanted = [
            e.step_id
            for e in events
            if e.status is StepStatus.DONE
            and e.step_id not in known
            and cached.state.has_dependents(e.step_id)
            and self.results.get(dag_id, e.step_id, run) is None
        ]
        if unknown or wanted:
            snap = await self.store.read_dag(dag_id, unknown, list(dict.fromkeys(wanted)), run)
            meta, meta_rev = snap.require_meta(dag_id)
            got = {sid: snap.require_step(dag_id, sid) for sid in unknown}
            for sid, data in snap.results.items():
                self.results.put(dag_id, sid, data, run)
        else:
            meta, meta_rev = await self._meta_read_ahead(dag_id, metas, cached.meta_rev)
            got = {}
        records = [got[sid] if sid in got else known[sid] for sid in ids]
        if meta.run_id != run:
            # The DAG was deleted and submitted again: nothing cached belongs to this run.
            self.states.forget(dag_id)
            return await self._load_full(dag_id)
        cached.state.meta, cached.meta_rev = meta, meta_rev
        for rec, rev in records:
            cached.state.steps[rec.step_id] = rec
            cached.revs[rec.step_id] = rev
        cached.enqueued = []
        cached.hint = set(ids)
        cached.noted = list(known)
        return cached

    async def _finished_here(
        self,
        dag_id: str,
        events: Sequence[Event],
        run: str,
        metas: list[asyncio.Future[tuple[DAGMeta, int]]] | None = None,
    ) -> dict[str, tuple[StepRecord, int]]:
        """Records (and results, into the cache) of steps this process's worker finished.

        The meta reads the worker sent with those completions are added to ``metas``.
        """
        local = self.local
        if local is None:
            return {}
        known: dict[str, tuple[StepRecord, int]] = {}
        for e in events:
            if e.status is not StepStatus.DONE or e.step_id in known:
                continue
            got = await local.wait_finished(dag_id, e.step_id, e.attempt)
            if got is None or got.rec.run_id != run:
                continue
            known[e.step_id] = (got.rec, got.rev)
            self.results.put(dag_id, e.step_id, got.result, run)
            if got.meta is not None and metas is not None:
                metas.append(got.meta)
        return known

    async def _meta_read_ahead(
        self, dag_id: str, metas: list[asyncio.Future[tuple[DAGMeta, int]]], known_rev: int
    ) -> tuple[DAGMeta, int]:
        """The meta a worker here read with its completion writes, else a read now.

        The worker's read left right after its completion writes, one server round trip
        before this pass would have read after the completion event. A pause or cancel
        written within that round trip is handled as one written just after this pass's
        read always was: a pause holds pending steps by CAS before it writes the meta (a
        dispatch from the older revision fails), and the worker of a dispatched step reads
        the meta before it runs. One older than the meta this process holds (it wrote
        the meta since) is not used.
        """
        for fut in metas:
            if not fut.done():
                await asyncio.wait([fut])
            if fut.cancelled() or fut.exception() is not None:
                continue
            meta, rev = fut.result()
            if rev >= known_rev:
                return meta, rev
        return await self.store.get_meta(dag_id)

    async def _load_full(self, dag_id: str) -> Loaded:
        meta_f = self.store.get_meta(dag_id)
        (meta, meta_rev), listed = await asyncio.gather(meta_f, self.store.list_steps(dag_id))
        steps = {rec.step_id: rec for rec, _ in listed}
        revs = {rec.step_id: rev for rec, rev in listed}
        await self._reclaim_strays(meta, steps, revs)
        signals = []
        if any(r.wait_signals and not r.is_terminal() for r in steps.values()):
            signals = await self.store.list_signals(dag_id)
        state = DAGState(meta, steps, {s.name: s for s in signals})
        return Loaded(state, revs, meta_rev)

    async def _reclaim_strays(
        self, meta: DAGMeta, steps: dict[str, StepRecord], revs: dict[str, int]
    ) -> None:
        """Put pending steps a racing submit of this id overwrote back under the meta's run.

        Raises StaleRevision if one moved meanwhile (the caller's pass is retried).
        """
        for rec in stray_steps(meta, steps.values()):
            revs[rec.step_id] = await self.store.put_step(
                rec.dag_id, rec.step_id, rec, revs[rec.step_id]
            )
            steps[rec.step_id] = rec
            _log.warning("step.run_reclaimed", dag_id=rec.dag_id, step_id=rec.step_id)

    async def results_for(
        self, dag_id: str, step_ids: Iterable[str], run_id: str = ""
    ) -> dict[str, bytes]:
        """Results of ``step_ids`` in run ``run_id`` (cached, the rest read concurrently).

        Raises:
            TransientError: a result is not readable yet (lagging replica).
        """
        out: dict[str, bytes] = {}
        missing = []
        for sid in step_ids:
            hit = self.results.get(dag_id, sid, run_id)
            if hit is None:
                missing.append(sid)
            else:
                out[sid] = hit
        if not missing:
            return out
        # Batched: a fan-in over thousands of upstreams reads them in a few requests, not
        # a request (and a Task) per result.
        got = (await self.store.read_dag(dag_id, (), missing, run_id)).results
        for sid in missing:
            item = got.get(sid)
            if item is None:
                # The record says done, so the result was written first; a lagging replica
                # can still miss it: retry rather than fail the step.
                raise TransientError(f"result of {sid!r} not readable yet")
            self.results.put(dag_id, sid, item, run_id)
            out[sid] = item
        return out

    async def publish(self, ev: Event) -> None:
        """Publish one scheduler event."""
        await self.bus.publish(event_subject(ev), marshal_event(ev))

    async def persist_changed(self, ld: Loaded) -> int:
        """CAS-write every record DAGState changed; returns how many were written."""
        ids = ld.state.take_changed()
        for sid in ids:
            rec = ld.state.steps[sid]
            ld.revs[sid] = await self.store.put_step(rec.dag_id, sid, rec, ld.revs.get(sid, 0))
        return len(ids)

    async def advance(self, ld: Loaded) -> None:
        """Apply every rule until nothing changes, then finalize and mark breakpoints."""
        st = ld.state
        for _ in range(_MAX_ROUNDS):
            st.apply_cascades()
            changed = await self.persist_changed(ld)
            if st.meta.status in (DAGStatus.PAUSING, DAGStatus.PAUSED):
                changed += await self._fence(ld)
                await self._maybe_paused(ld)
            elif st.meta.status is DAGStatus.RUNNING:
                if ld.hint is None:  # a full read (resume, sweep): no step may stay held
                    changed += await self._release(ld)
                changed += await self._dispatch_ready(ld)
            if not changed:
                break
        await self._maybe_finalize(ld)
        if st.meta.status is DAGStatus.RUNNING:
            await self._mark_breakpoints(ld)

    # -- pause -------------------------------------------------------------------------

    async def _fence(self, ld: Loaded) -> int:
        st, n = ld.state, 0
        for sid, rec in list(st.steps.items()):
            if rec.status is StepStatus.PENDING and not rec.held:
                new = msgspec.structs.replace(rec, held=True, held_at=_now())
                ld.revs[sid] = await self.store.put_step(rec.dag_id, sid, new, ld.revs[sid])
                st.steps[sid] = new
                n += 1
        return n

    async def _release(self, ld: Loaded) -> int:
        """Clear holds left on a running DAG's pending steps.

        ``resume`` releases the holds itself, but a pass that read the meta just before
        the resume can fence a step after that release, and a dynamic step added while
        the DAG was pausing can be created after it. Held steps never run, so without
        this they would stay pending for good.
        """
        st = ld.state
        held = [s for s, r in st.steps.items() if r.held and r.status is StepStatus.PENDING]
        if not held:
            return 0
        # ``pause`` holds the steps before it writes the meta: a pass that read "running"
        # in between must not undo that. Re-writing the meta from the revision read fences
        # it: if pause wrote first this fails (the pass re-reads and sees pausing), and if
        # this lands first pause's own write fails and it holds the steps again.
        ld.meta_rev = await self.store.put_meta(st.meta.id, st.meta, ld.meta_rev)
        for sid in held:
            new = msgspec.structs.replace(st.steps[sid], held=False, held_at=None)
            ld.revs[sid] = await self.store.put_step(new.dag_id, sid, new, ld.revs[sid])
            st.steps[sid] = new
        _log.info("dag.holds_released", dag_id=st.meta.id, steps=len(held))
        return len(held)

    async def _maybe_paused(self, ld: Loaded) -> None:
        st = ld.state
        if st.meta.status is not DAGStatus.PAUSING or st.has_in_flight_steps():
            return
        meta = msgspec.structs.replace(st.meta, status=DAGStatus.PAUSED, paused_at=_now())
        ld.meta_rev = await self.store.put_meta(meta.id, meta, ld.meta_rev)
        st.meta = meta
        _log.info("dag.paused", dag_id=meta.id)

    # -- finalize ----------------------------------------------------------------------

    async def _maybe_finalize(self, ld: Loaded) -> None:
        st = ld.state
        if st.meta.status.terminal or not st.all_steps_terminal():
            return
        # Memory may lag (a dynamic step whose step_added event was lost): confirm with
        # one listing that the store holds no other live step before finishing the DAG.
        listed = await self.store.list_steps(st.meta.id)
        if any(not rec.is_terminal() for rec, _ in listed) or len(listed) != len(st.steps):
            raise TransientError(f"DAG {st.meta.id!r} changed under the scheduler; reloading")
        final = st.derive_final_status()
        meta = msgspec.structs.replace(st.meta, status=final, finished_at=_now())
        ld.meta_rev = await self.store.put_meta(meta.id, meta, ld.meta_rev)
        st.meta = meta
        _log.info("dag.finished", dag_id=meta.id, status=final.value)
        await drop_live(self.store, meta.id)
        for sid in st.steps:
            self.sent.forget(meta.id, sid)

    # -- dispatch ----------------------------------------------------------------------

    def _ready(self, ld: Loaded) -> list[str]:
        """``ready_to_run()``, narrowed to the dependents of ``ld.hint`` when it is set.

        Each event then costs the readiness checks of a step's dependents instead of a
        scan of the whole DAG (a 1,000-leaf fan-in would otherwise be quadratic).
        """
        st, hint = ld.state, ld.hint
        ld.hint = None  # later rounds follow cascades, which may reach anything
        if hint is None:
            return st.ready_to_run()
        if ld.dependents is None:
            index: dict[str, list[str]] = {}
            for sid, rec in st.steps.items():
                for dep in dict.fromkeys([*rec.deps, *rec.optional_deps]):
                    index.setdefault(dep, []).append(sid)
            ld.dependents = index
        candidates = dict.fromkeys(d for h in hint for d in ld.dependents.get(h, ()))
        return [
            s
            for s in candidates
            if st.steps[s].status is StepStatus.PENDING
            and not st.steps[s].held
            and not st.before_bp_blocked(s)
            and not st.signal_blocked(s)
            and st.deps_satisfied(s)
            and not st.doomed(s)
        ]

    async def _dispatch_ready(self, ld: Loaded) -> int:
        ready = self._ready(ld)
        if not ready:
            return 0
        # More ready steps than lanes (a wide fan-out): every lane stays busy whatever each
        # dispatch waits for, so throughput is what counts, not one step's latency.
        wide = len(ready) > self._lane_count
        width = 2 * self._lane_count if wide else self._lane_count
        outcomes = await in_lanes(
            functools.partial(self._dispatch_one, ld, wide=wide), ready, width
        )
        failure: BaseException | None = None
        settled = 0
        for sid, out in zip(ready, outcomes, strict=True):
            if isinstance(out, BaseException):
                failure = failure or out
            elif isinstance(out, tuple):
                self._apply_unrunnable(ld, sid, *out)
                settled += 1
        await self.persist_changed(ld)
        if failure is not None:
            raise failure
        # Dispatched steps are running, which readies nothing else; a step skipped or
        # failed here may, so only then is another round needed.
        return settled

    def _apply_unrunnable(self, ld: Loaded, sid: str, kind: str, message: str) -> None:
        if kind == "skip":
            ld.state.mark_skipped(sid)
            return
        _log.error(
            "step.unrunnable", dag_id=ld.state.meta.id, step_id=sid, kind=kind, error=message
        )
        ld.state.mark_failed(sid, kind, message)

    async def _dispatch_one(
        self, ld: Loaded, sid: str, *, wide: bool = False
    ) -> tuple[str, str] | None:
        await self._lanes.acquire()
        held = True
        try:
            rec = ld.state.steps[sid]
            # The generation is the revision the dispatch CAS starts from: unique per
            # dispatch even when the CAS loses, so a lost dispatch's message never shares
            # a msg-id with a later one, and a worker can tell "my dispatch's write has not
            # landed yet" (record still at that revision) from "stale" (it moved on).
            gen = ld.revs[sid]
            built = await self._running_record(ld, rec, gen)
            if isinstance(built, tuple):
                return built
            env, new = built.env, built.rec
            # Record and message leave together (one round trip instead of two). The
            # record's CAS goes first (this coroutine publishes it before it yields), the
            # message right after (its task starts at that yield); a worker that still
            # reads the record pending at ``gen`` re-reads until the CAS shows: only the
            # digest it writes proves the message (ebind.workflow.proof).
            # A wide dispatch sends the message once the CAS is acknowledged instead: no
            # Task per step, no message for a CAS that lost, and no worker re-reading a
            # record its message outran. A step waits one round trip longer, which the
            # many in flight hide.
            crashpoint("dispatch.before_send")
            local = self.local
            noted = (
                None if local is None else local.expect(rec.dag_id, sid, gen, new.dispatch_digest)
            )
            send_t = None if wide else asyncio.ensure_future(self.send(env, gen))
            wrote: int | BaseException = TransientError("dispatch not written")
            try:
                wrote = await self.store.put_step(rec.dag_id, sid, new, gen)
            except Exception as exc:
                wrote = exc
            finally:
                if noted is not None:
                    # Only an acknowledged CAS proves the message to this process's worker.
                    LocalDispatches.settle(noted, (new, wrote) if isinstance(wrote, int) else None)
            if send_t is None:
                if isinstance(wrote, BaseException):
                    raise wrote  # nothing was sent; the pass is retried from a fresh read
                # The engine's lanes bound the writes in flight; the message goes out on
                # the pass's own lanes, so as many requests are in flight as when both
                # leave together.
                self._lanes.release()
                held = False
            sent: BaseException | None = None
            try:
                await (send_t if send_t is not None else self.send(env, gen))
            except Exception as exc:
                sent = exc
            if isinstance(wrote, BaseException):
                raise wrote  # the pass is retried from a fresh read; the message is fenced
            ld.revs[sid] = wrote
            ld.state.steps[sid] = new
            if isinstance(sent, PayloadTooLarge):
                # Resolved arguments (e.g. large upstream results) exceed max_payload: no
                # retry can make them fit, so the step fails now instead of staying
                # dispatched with a message the server refuses on every resend.
                return unenqueueable(sid, sent)
            if isinstance(sent, BaseException):
                raise sent
            ld.enqueued.append(sid)
            return None
        finally:
            if held:
                self._lanes.release()

    async def _running_record(
        self, ld: Loaded, rec: StepRecord, gen: int
    ) -> _Dispatch | tuple[str, str]:
        """The envelope and ``running`` record of a dispatch from ``gen``, or why none."""
        try:
            env = await self.build_envelope(ld, rec, gen)
        except PlacementError as exc:
            return ("placement", str(exc))
        except ResolveError as exc:
            return ("resolve", str(exc))
        if env is None:
            return ("skip", "")
        new = msgspec.structs.replace(
            rec,
            status=StepStatus.RUNNING,
            generation=gen,
            dispatch_digest=dispatch_digest(env),
            attempt=0,
            worker_id="",
            target=env.target,
            started_at=_now(),
            error_kind="",
            error_message="",
            redispatches=0,
            dispatch_seq=0,
        )
        return _Dispatch(env, new)

    async def send(self, env: TaskEnvelope, generation: int) -> PubAck | None:
        """Publish a step's envelope; a failure leaves it dispatched for the sweep to resend.

        Returns the PubAck (None when the enqueuer does not report one); its sequence is
        remembered in ``sent`` so the sweep can tell a queued message from a lost one.
        """
        msg_id = f"{env.dag_id}:{env.step_id}:{generation}"
        payload = bytes(env.payload)
        if too_deep(payload, MAX_NESTING - 1):
            # Upstream results or a signal put into the arguments made them too deep: a
            # worker would dead-letter the message without knowing its step, and the
            # sweep would send it again forever. The caller fails the step instead.
            raise PayloadTooLarge(
                f"its arguments nest deeper than {MAX_NESTING - 1} levels once upstream "
                "results and signals are put in; a worker refuses such a task message",
                size=len(payload),
            )
        ack: PubAck | None = None
        try:
            for i in range(_LEADERLESS_RETRIES):
                try:
                    ack = await self.enqueuer.enqueue(env, msg_id=msg_id)
                    break
                except Exception as exc:
                    # No stream leader (a new R3 stream, an election): nothing was stored,
                    # and a retry in a moment usually lands; the msg-id dedupes anyway.
                    if i == _LEADERLESS_RETRIES - 1 or not is_leaderless(exc):
                        raise
                    await asyncio.sleep(min(0.1 * 2**i, 1.0))
        except PayloadTooLarge:
            raise  # not transient: the caller fails the step
        except Exception as exc:
            _log.warning(
                "step.enqueue_failed", dag_id=env.dag_id, step_id=env.step_id, error=str(exc)
            )
            raise TransientError(f"enqueue {msg_id}: {exc}") from exc
        _log.debug("step.enqueued", dag_id=env.dag_id, step_id=env.step_id, generation=generation)
        if ack is not None and ack.seq > 0:
            self.sent.put(env.dag_id, env.step_id, generation, ack.seq)
        return ack

    async def build_envelope(
        self, ld: Loaded, rec: StepRecord, generation: int
    ) -> TaskEnvelope | None:
        """Resolve args and target of ``rec``; None when a required upstream dooms it."""
        st = ld.state
        # Only the referenced upstreams' statuses: a map of every step's status, built per
        # dispatch, made a wide fan-out quadratic.
        statuses = {
            p.step_id: st.steps[p.step_id].status
            for p in find_refs(bytes(rec.args_json))
            if isinstance(p, Ref) and p.step_id in st.steps
        }
        refs = {sid for sid, status in statuses.items() if status is StepStatus.DONE}
        results = await self.results_for(rec.dag_id, refs, rec.run_id)
        resolved, skip = resolve_args(
            rec.args_json, results, statuses, st.signals, step_id=rec.step_id
        )
        if skip:
            return None
        target = resolve_placement(rec.step_id, st.steps, dag_id=rec.dag_id)
        return TaskEnvelope(
            id=f"{rec.dag_id}:{rec.step_id}",
            name=rec.fn_name,
            payload=msgspec.Raw(resolved),
            enqueued_at=_now(),
            dag_id=rec.dag_id,
            step_id=rec.step_id,
            retry_policy=rec.policy or st.meta.default_policy,
            target=target,
            timeout=rec.timeout,
            trace_ctx={**rec.trace_ctx, GENERATION_KEY: str(generation)},
            queue=_valid_or_default(rec.queue, check_queue),
            priority=_valid_or_default(rec.priority, check_priority),
        )

    # -- breakpoints -------------------------------------------------------------------

    async def _mark_breakpoints(self, ld: Loaded) -> None:
        st = ld.state
        if not st.meta.active_breakpoints:
            return  # nothing armed: no step can be stopped
        todo = [
            (s, "before") for s in st.blocked_at_before() if st.steps[s].bp_before is BPState.NONE
        ]
        todo += [
            (s, "after") for s in st.holding_at_after() if st.steps[s].bp_after is BPState.NONE
        ]
        for sid, pos in todo:
            rec = st.steps[sid]
            field_name = "bp_before" if pos == "before" else "bp_after"
            new = msgspec.structs.replace(
                rec, **{field_name: BPState.BLOCKED}, bp_blocked_at=rec.bp_blocked_at or _now()
            )
            try:
                ld.revs[sid] = await self.store.put_step(rec.dag_id, sid, new, ld.revs[sid])
            except StaleRevision:
                continue  # advisory only: someone else wrote the record, maybe the mark
            st.steps[sid] = new
            labels = rec.break_before if pos == "before" else rec.break_after
            ev = Event(
                kind=EventKind.BP_HIT,
                dag_id=rec.dag_id,
                step_id=sid,
                bp_position=pos,
                bp_labels=list(labels),
            )
            try:
                await self.publish(ev)
            except Exception as exc:  # informational event: never fail the evaluation
                _log.warning(
                    "bp.hit_publish_failed", dag_id=rec.dag_id, step_id=sid, error=str(exc)
                )
            _log.info("bp.hit", dag_id=rec.dag_id, step_id=sid, position=pos)


def _valid_or_default(value: str, check: Callable[[str], str]) -> str:
    """A step record's queue or band when valid (records are read back from KV), else ""."""
    if not value:
        return ""
    try:
        return check(value)
    except InvalidName:
        _log.warning("workflow.step_route_invalid", value=value[:64], note="sent to the default")
        return ""
