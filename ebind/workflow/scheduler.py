"""Scheduler: consumes ``DAG.>`` events, advances DAGs, and reconciles them periodically.

Only the leader subscribes to the shared durable (an event that still reaches a
non-leader during a handover is nak'd with ``nak_delay``). Events are handled in
one *lane* per DAG: while a DAG is being evaluated, further events for it wait and are
covered together by the next evaluation (each evaluation re-reads the DAG from KV, so one
pass settles any number of events), and their deliveries are acked only after that pass
succeeded. DAGs advance concurrently (one slow DAG never holds up the others). A failed
pass naks its events for redelivery; an event that keeps failing is terminated and logged (poison).

Reconciliation: on every false → true leader edge and every ``sweep_interval`` the
leader re-evaluates each live DAG through the same lanes and, in addition, rescues
``running`` steps that nothing will finish: a step dispatched but never started is
re-sent only when its message is gone from the stream, backing off between re-sends
(``ebind.workflow.redispatch``), and a started step whose worker is gone (liveness record
missing, stale, or no longer listing the step) is re-enqueued as a new generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from ebind import observe
from ebind._aio import raise_if_cancelling, wait_event
from ebind._jsreq import PubAck
from ebind.crashpoints import crashpoint
from ebind.errors import DAGNotFound, PayloadTooLarge, StaleRevision
from ebind.logging import get_logger
from ebind.streams import DUPLICATE_WINDOW
from ebind.workflow._transient import is_transient
from ebind.workflow.engine import Engine, Loaded, TransientError, unenqueueable
from ebind.workflow.events import EVENTS_FILTER
from ebind.workflow.history import collect, prune_live
from ebind.workflow.lifecycle import decode_live, fresh_entry
from ebind.workflow.liveness import Liveness
from ebind.workflow.proof import GENERATION_KEY, dispatch_digest
from ebind.workflow.protocols import Delivery, LeaderElector, Subscription
from ebind.workflow.redispatch import (
    Presence,
    RedispatchAction,
    RedispatchTiming,
    decide,
    msg_id,
)
from ebind.workflow.types import Event, EventKind, StepRecord, StepStatus

__all__ = ["Scheduler", "SchedulerConfig"]

_log = get_logger("ebind.workflow.scheduler")
_POISON_LIMIT = 20
# Redeliveries of a completion event whose record still is not terminal before it is
# dropped (with nak_delay between them: ample for a lagging replica or a redelivered step).
_UNSEEN_LIMIT = 10
_INFO_KINDS = (EventKind.BP_HIT, EventKind.BP_RESUMED)
# Message look-ups of one DAG's queued steps in flight at once during a sweep.
_LOOKUPS = 32


@dataclass(frozen=True)
class SchedulerConfig:
    """Timing knobs of the scheduler (seconds)."""

    nak_delay: float = 1.0
    sweep_check_interval: float = 5.0
    sweep_interval: float = 30.0
    sweep_timeout: float = 60.0
    dispatch_grace: float = 10.0
    redispatch_after: float = 240.0
    redispatch_cap: float = 3600.0
    """Longest wait between two re-sends of one step (they double from redispatch_after)."""
    liveness_ttl: float = 15.0
    history: float = 0.0
    """Finished DAGs older than this are removed by the leader (0: kept forever)."""
    collect_interval: float = 3600.0
    """Seconds between two history collections while leader."""


@dataclass
class _Lane:
    """Deliveries of one DAG waiting for the next evaluation."""

    waiting: list[tuple[Event | None, Delivery]] = field(default_factory=list)
    sweep: bool = False
    task: asyncio.Task[None] | None = None


class _Waiter:
    """A Delivery stand-in for sweep passes: resolves a future instead of acking."""

    def __init__(self) -> None:
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def ack(self) -> None:
        if not self.done.done():
            self.done.set_result(True)

    async def nak(self, delay: float | None = None) -> None:
        if not self.done.done():
            self.done.set_result(False)

    async def term(self) -> None:
        await self.nak()


class _Advanced:
    """The Delivery of a completion taken straight from this process's worker.

    Nothing to acknowledge; a nak drops it (the completion event makes the pass instead).
    """

    async def ack(self) -> None:
        return None

    async def nak(self, delay: float | None = None) -> None:
        return None

    async def term(self) -> None:
        return None


def _age(at: datetime | None) -> float:
    return (datetime.now(UTC) - at).total_seconds() if at is not None else float("inf")


class Scheduler:
    """Advances DAGs from bus events; sweeps on leadership edges and periodically."""

    def __init__(
        self,
        engine: Engine,
        elector: LeaderElector,
        *,
        config: SchedulerConfig | None = None,
        liveness: Liveness | None = None,
        presence: Presence | None = None,
    ) -> None:
        self.engine = engine
        self.elector = elector
        self.config = config or SchedulerConfig()
        self.liveness = liveness
        self.presence = presence
        self.redispatches = 0
        """Step messages this scheduler re-sent (a lost message, an orphaned step)."""
        self._lanes: dict[str, _Lane] = {}
        self._failures: dict[tuple[str, bytes], int] = {}
        self._sweep_task: asyncio.Task[int] | None = None
        self._collect_task: asyncio.Task[None] | None = None
        self._indexed = False
        self._sub: Subscription | None = None
        self.sweeps = 0
        self.live_dags = 0
        """Unfinished DAGs found by the last sweep."""

    def _gauges(self) -> dict[str, float]:
        leader = self.elector.is_leader()
        return {
            observe.GAUGE_LEADER: 1.0 if leader else 0.0,
            # Followers report 0, so a sum over every process is the leader's count.
            observe.GAUGE_LIVE_DAGS: float(self.live_dags) if leader else 0.0,
        }

    async def run(self) -> None:
        """Consume ``DAG.>`` while leader, sweep on leadership edges and periodically."""
        _log.info("scheduler.started")
        drop_gauges = observe.add_gauge_source(self._gauges)
        try:
            await self._watch_leadership()
        finally:
            drop_gauges()
            self._take_local(False)
            if self._sub is not None:
                await self._sub.stop()
                self._sub = None
            for bg in (self._sweep_task, self._collect_task):
                if bg is not None:
                    bg.cancel()
            lanes = [ln.task for ln in self._lanes.values() if ln.task is not None]
            for t in lanes:
                t.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)
            _log.info("scheduler.stopped")

    def _wake_on_change(self) -> asyncio.Event:
        """An event set on every leadership edge when the elector reports them."""
        wake = asyncio.Event()
        if hasattr(self.elector, "on_change"):
            previous = self.elector.on_change

            def changed(leader: bool) -> None:
                wake.set()
                if previous is not None:
                    previous(leader)

            self.elector.on_change = changed
        return wake

    async def _follow(self, leader: bool) -> None:
        # Only the leader pulls from the shared durable: a non-leader holding events
        # would have to nak them, delaying every other event by nak_delay.
        if leader and self._sub is None:
            self._sub = await self.engine.bus.subscribe(EVENTS_FILTER, self.on_event)
        elif not leader and self._sub is not None:
            self._take_local(False)
            sub, self._sub = self._sub, None
            await sub.stop()
            self.engine.states.clear()  # another leader may change records meanwhile
        # A worker in this process may appear after the scheduler started (the hook is
        # made then): look again on every tick.
        self._take_local(leader and self._sub is not None)

    def _take_local(self, on: bool) -> None:
        """Take (or stop taking) completions straight from this process's worker."""
        local = self.engine.local
        if local is not None:
            local.on_finished = self._local_completion if on else None

    async def _watch_leadership(self) -> None:
        was_leader, last_sweep, last_collect = False, float("-inf"), float("-inf")
        wake = self._wake_on_change()
        while True:
            leader = self.elector.is_leader()
            if leader != was_leader:
                _log.info("leader.acquired" if leader else "leader.lost")
            cfg = self.config
            try:
                await self._follow(leader)
            except Exception as exc:
                # E.g. the consumer cannot be created while the events stream elects a
                # leader: the scheduler must outlive that, so try again on the next tick
                # (sweeps still run meanwhile and advance every DAG from KV).
                _log.warning("scheduler.subscribe_failed", error=repr(exc))
            due = leader and (not was_leader or time.monotonic() - last_sweep >= cfg.sweep_interval)
            was_leader = leader
            if due and (self._sweep_task is None or self._sweep_task.done()):
                last_sweep = time.monotonic()
                self._sweep_task = asyncio.get_running_loop().create_task(self.sweep())
            # Without a history retention the collector still runs once, to index DAGs
            # submitted before the live index existed.
            collect_due = (cfg.history > 0 or not self._indexed) and (
                time.monotonic() - last_collect >= cfg.collect_interval
            )
            if leader and collect_due and (self._collect_task is None or self._collect_task.done()):
                last_collect = time.monotonic()
                self._collect_task = asyncio.get_running_loop().create_task(self.collect())
            raise_if_cancelling()  # a cancel nats-py swallowed must still stop the loop
            wake.clear()
            await wait_event(wake, cfg.sweep_check_interval)

    # -- events --------------------------------------------------------------------------

    async def on_event(self, ev: Event, delivery: Delivery) -> None:
        """Bus handler: nak when not leader, else queue the delivery on its DAG's lane."""
        if not self.elector.is_leader():
            await delivery.nak(self.config.nak_delay)
            return
        if ev.kind in _INFO_KINDS:
            await delivery.ack()
            return
        self._enqueue(ev.dag_id, ev, delivery, sweep=False)

    def _local_completion(self, dag_id: str, step_id: str, attempt: int) -> None:
        """This process's worker finished a step done: advance its DAG now.

        The worker noted the record and result it wrote (and sent a read of the meta with
        them), so the pass starts one round trip earlier than the completion event would
        let it. The event still comes and is acked once this pass has succeeded; if the
        pass fails, the event makes its own.
        """
        if not self.elector.is_leader():
            return
        ev = Event(
            kind=EventKind.COMPLETED,
            dag_id=dag_id,
            step_id=step_id,
            status=StepStatus.DONE,
            attempt=attempt,
        )
        self._enqueue(dag_id, ev, _Advanced(), sweep=False)

    def _enqueue(self, dag_id: str, ev: Event | None, delivery: Delivery, *, sweep: bool) -> None:
        lane = self._lanes.get(dag_id)
        if lane is None:
            lane = self._lanes[dag_id] = _Lane()
        lane.waiting.append((ev, delivery))
        lane.sweep = lane.sweep or sweep
        if lane.task is None or lane.task.done():
            lane.task = asyncio.get_running_loop().create_task(self._drain(dag_id, lane))

    async def _drain(self, dag_id: str, lane: _Lane) -> None:
        while lane.waiting:
            batch, sweep = lane.waiting, lane.sweep
            lane.waiting, lane.sweep = [], False
            batch = await self._answered(batch)
            if not batch and not sweep:
                continue
            try:
                unseen = await self.evaluate(
                    dag_id, [e for e, _ in batch if e is not None], sweep=sweep
                )
            except DAGNotFound:
                _log.info("scheduler.dag_gone", dag_id=dag_id)
                await _settle(batch, "ack")
            except (StaleRevision, TransientError) as exc:
                _log.debug("scheduler.retry", dag_id=dag_id, error=str(exc))
                await _settle(batch, "nak", 0.02 + random.random() * 0.1)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_transient(exc):
                    # Store or bus trouble (a cluster election), not this event's fault:
                    # retry without counting towards the poison limit.
                    _log.info("scheduler.retry_later", dag_id=dag_id, error=repr(exc))
                    await _settle(batch, "nak", self.config.nak_delay)
                else:
                    await self._failed(dag_id, batch, exc)
            else:
                await self._settle_evaluated(dag_id, batch, unseen)
        if self._lanes.get(dag_id) is lane and not lane.waiting:
            del self._lanes[dag_id]

    async def _answered(
        self, batch: list[tuple[Event | None, Delivery]]
    ) -> list[tuple[Event | None, Delivery]]:
        """Answer completions a pass already advanced from this process's worker's note.

        Such a completion (the event, or the worker's hand-over if the event came first)
        names a step this process wrote ``done`` at that attempt and made a successful
        pass on since; another pass would read what that one read, and anything that
        changed meanwhile comes with an event (or sweep) of its own.
        """
        local = self.engine.local
        if local is None:
            return batch
        keep = []
        for ev, delivery in batch:
            if (
                ev is not None
                and ev.kind is EventKind.COMPLETED
                and ev.status is StepStatus.DONE
                and local.take_advanced(ev.dag_id, ev.step_id, ev.attempt)
            ):
                # An ack that fails must not end the lane's task with the rest of the batch.
                await _settle([(ev, delivery)], "ack")
            else:
                keep.append((ev, delivery))
        return keep

    async def _settle_evaluated(
        self,
        dag_id: str,
        batch: list[tuple[Event | None, Delivery]],
        unseen: list[Event],
    ) -> None:
        """Ack a successful pass; nak events whose completion the store did not show yet.

        Such an event comes back after ``nak_delay`` a bounded number of times, then is
        dropped: the record is the truth (a completion whose CAS failed or has not landed
        publishes its event again when it is written), and the sweep re-reads the DAG.
        """
        pending = {id(ev) for ev in unseen}
        for ev, delivery in batch:
            if isinstance(delivery, _Advanced) and ev is not None and id(ev) in pending:
                continue  # the completion event retries on its own
            if ev is None or id(ev) not in pending:
                if ev is not None:
                    self._failures.pop(_event_key(ev), None)
                await _settle([(ev, delivery)], "ack")
                continue
            key = _event_key(ev)
            n = self._failures[key] = self._failures.get(key, 0) + 1
            if n >= _UNSEEN_LIMIT:
                self._failures.pop(key, None)
                _log.info("scheduler.completion_unseen", dag_id=dag_id, step_id=ev.step_id)
                await _settle([(ev, delivery)], "ack")
            else:
                await _settle([(ev, delivery)], "nak", self.config.nak_delay)

    async def _failed(
        self, dag_id: str, batch: list[tuple[Event | None, Delivery]], exc: Exception
    ) -> None:
        _log.warning("scheduler.evaluation_failed", dag_id=dag_id, error=repr(exc))
        for ev, delivery in batch:
            # A settle that fails (the connection went away) must not leave the rest of the
            # batch unsettled: the server redelivers that one after its ack wait.
            with contextlib.suppress(Exception):
                await self._settle_failed(dag_id, ev, delivery, exc)

    async def _settle_failed(
        self, dag_id: str, ev: Event | None, delivery: Delivery, exc: Exception
    ) -> None:
        if ev is None or isinstance(delivery, _Advanced):
            await delivery.nak()  # a sweep's waiter, or the event retries on its own
            return
        key = _event_key(ev)
        n = self._failures[key] = self._failures.get(key, 0) + 1
        if n >= _POISON_LIMIT:
            self._failures.pop(key, None)
            _log.error(
                "scheduler.event_poisoned",
                dag_id=dag_id,
                kind=ev.kind.value,
                step_id=ev.step_id,
                error=repr(exc),
            )
            await delivery.term()
        else:
            await delivery.nak(self.config.nak_delay)

    async def evaluate(
        self, dag_id: str, events: list[Event], *, sweep: bool = False
    ) -> list[Event]:
        """Load one DAG and advance it (in a sweep, also rescue orphaned running steps).

        Returns the completion events whose record did not read as terminal: the DAG was
        still advanced on what the store shows, and the caller retries those events.
        """
        cache = self.engine.states
        try:
            ld = await self.engine.load(dag_id, () if sweep else events)
            st = ld.state
            if st.meta.status.terminal:
                cache.forget(dag_id)
                return []
            unseen = await self._await_completions(ld, events)
            if sweep and st.meta.status.value in ("running", "pausing"):
                await self._rescue_running(ld)
            await self.engine.advance(ld)
        except BaseException:
            cache.forget(dag_id)
            raise
        if ld.state.meta.status.terminal:
            cache.forget(dag_id)
        else:
            cache.put(dag_id, ld)
        self._note_advanced(ld, events)
        return unseen

    def _note_advanced(self, ld: Loaded, events: list[Event]) -> None:
        """Note the completions this pass took from this process's worker.

        The other trigger of each (the event, or the worker's hand-over) is then
        answered without a pass.
        """
        local = self.engine.local
        if local is None or not ld.noted:
            return
        noted = set(ld.noted)
        for ev in events:
            if ev.kind is EventKind.COMPLETED and ev.step_id in noted:
                local.advanced(ev.dag_id, ev.step_id, ev.attempt)

    async def _await_completions(self, ld: Loaded, events: list[Event]) -> list[Event]:
        """Completion events whose record does not read as terminal (after brief re-reads).

        The hook pipelines record and event; a clustered store may show the event first.
        An event whose record never turns terminal (its CAS failed, or timed out without
        landing) must not block the DAG: failing the whole pass would also fail every
        sweep of this DAG while the event keeps coming back.
        """
        unseen: list[Event] = []
        for ev in events:
            rec = ld.state.steps.get(ev.step_id)
            if ev.kind is not EventKind.COMPLETED or rec is None:
                continue
            for delay in (0.002, 0.01, 0.05):
                if rec.is_terminal():
                    break
                await asyncio.sleep(delay)
                rec, rev = await self.engine.store.get_step(rec.dag_id, rec.step_id)
                ld.state.steps[rec.step_id], ld.revs[rec.step_id] = rec, rev
            if not rec.is_terminal():
                unseen.append(ev)
        return unseen

    # -- reconciliation ------------------------------------------------------------------

    async def sweep(self) -> int:
        """Re-evaluate every DAG in the live index through the lanes; returns how many.

        Only the live index is listed, never the finished history, so a sweep costs what
        the live DAGs cost. Entries of DAGs found finished or missing are removed after.
        """
        self.sweeps += 1
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.config.sweep_timeout):
                entries = await self.engine.store.list_live()
                waiters: list[_Waiter] = []
                for dag_id, raw in entries:
                    if fresh_entry(decode_live(raw), datetime.now(UTC)):
                        continue  # its submit (or retry) is still advancing it
                    w = _Waiter()
                    waiters.append(w)
                    self._enqueue(dag_id, None, w, sweep=True)
                self.live_dags = len(waiters)
                results = await asyncio.gather(*(w.done for w in waiters))
                await prune_live(self.engine.store, entries)
        except TimeoutError:
            _log.warning("sweep.timed_out", timeout=self.config.sweep_timeout)
            observe.emit(observe.SWEEP_TIMED_OUT, seconds=time.monotonic() - started)
            return 0
        except Exception as exc:
            _log.warning("sweep.failed", error=repr(exc))
            observe.emit(observe.SWEEP_FAILED, seconds=time.monotonic() - started, error=repr(exc))
            return 0
        _log.debug("sweep.done", dags=len(results), failed=results.count(False))
        observe.emit(
            observe.SWEEP_DONE,
            seconds=time.monotonic() - started,
            dags=len(results),
            failed=results.count(False),
        )
        return len(results)

    async def collect(self) -> None:
        """Remove history older than ``config.history``, index unindexed live DAGs.

        A history of 0 removes nothing; errors are logged, never raised.
        """
        older_than = self.config.history if self.config.history > 0 else math.inf
        try:
            report = await collect(self.engine.store, older_than)
        except Exception as exc:
            _log.warning("history.collect_failed", error=repr(exc))
        else:
            # A DAG skipped this time may be a live one left unindexed: collect again.
            self._indexed = not report.failed

    async def _rescue_running(self, ld: Loaded) -> None:
        dispatched = [
            r for r in ld.state.steps.values() if r.status is StepStatus.RUNNING and r.attempt == 0
        ]
        looked = await self._look_up(dispatched)
        for sid, rec in list(ld.state.steps.items()):
            if rec.status is not StepStatus.RUNNING:
                self.engine.sent.forget(rec.dag_id, sid)
                continue
            if rec.attempt == 0:
                await self._rescue_dispatched(ld, rec, looked)
                continue
            self.engine.sent.forget(rec.dag_id, sid)
            if await self._orphaned(rec):
                _log.warning(
                    "step.orphaned",
                    dag_id=rec.dag_id,
                    step_id=sid,
                    worker_id=rec.worker_id,
                    attempt=rec.attempt,
                )
                await self._redispatch(ld, rec, bump=True, reason="orphaned")

    def _timing(self) -> RedispatchTiming:
        cfg = self.config
        return RedispatchTiming(
            grace=cfg.dispatch_grace,
            base=cfg.redispatch_after,
            cap=max(cfg.redispatch_cap, cfg.redispatch_after),
            # Half the stream's duplicate window: a same-id re-publish is still dropped.
            probe_window=DUPLICATE_WINDOW / 2 if self.presence is not None else 0.0,
        )

    def _known_seq(self, rec: StepRecord) -> int | None:
        seq = self.engine.sent.get(rec.dag_id, rec.step_id, rec.generation)
        if seq is None and rec.dispatch_seq > 0:
            seq = rec.dispatch_seq
        return seq if self.presence is not None else None

    async def _present(self, rec: StepRecord, seq: int) -> bool | None:
        assert self.presence is not None
        try:
            return await self.presence.present(seq, msg_id(rec.dag_id, rec.step_id, rec.generation))
        except Exception as exc:
            # Unknown: leave the step for the next sweep rather than add a copy.
            _log.warning(
                "step.presence_unknown", dag_id=rec.dag_id, step_id=rec.step_id, error=repr(exc)
            )
            return None

    async def _look_up(self, recs: list[StepRecord]) -> dict[str, bool | None]:
        """Look up, concurrently, the messages of the steps due for a check (by step id).

        A DAG behind a backlog can have thousands of queued steps: one round trip after
        another would make the sweep's cost grow with the backlog's latency.
        """
        timing, due = self._timing(), []
        for rec in recs:
            seq = self._known_seq(rec)
            if seq is None:
                continue
            age = _age(rec.started_at)
            if decide(age, rec.redispatches, seq_known=True, present=None, timing=timing) is (
                RedispatchAction.CHECK
            ):
                due.append((rec, seq))
        if not due:
            return {}
        gate = asyncio.Semaphore(_LOOKUPS)

        async def one(rec: StepRecord, seq: int) -> bool | None:
            async with gate:
                return await self._present(rec, seq)

        got = await asyncio.gather(*(one(rec, seq) for rec, seq in due))
        return {rec.step_id: present for (rec, _), present in zip(due, got, strict=True)}

    async def _rescue_dispatched(
        self, ld: Loaded, rec: StepRecord, looked: dict[str, bool | None]
    ) -> None:
        """Re-send a dispatched, unstarted step only when its message is gone, backed off."""
        age, timing = _age(rec.started_at), self._timing()
        seq = self._known_seq(rec)
        action = decide(
            age, rec.redispatches, seq_known=seq is not None, present=None, timing=timing
        )
        if action is RedispatchAction.CHECK and seq is not None:
            present = looked.get(rec.step_id)
            if present is None:
                return  # the look-up failed: try again on the next sweep
            action = decide(age, rec.redispatches, seq_known=True, present=present, timing=timing)
        if action is RedispatchAction.PROBE:
            await self._probe(ld, rec, age, timing)
        elif action is RedispatchAction.RESEND and await self._unchanged(ld, rec):
            reason = "lost" if seq is not None else "unknown"
            await self._redispatch(ld, rec, bump=True, reason=reason)

    async def _unchanged(self, ld: Loaded, rec: StepRecord) -> bool:
        """Whether the step record still reads as this pass loaded it.

        A worker writes a step's outcome before it acks the message, so a message found
        gone after the pass read the record may just have finished: the fresh record
        shows that, and the step is not re-sent.
        """
        fresh, rev = await self.engine.store.get_step(rec.dag_id, rec.step_id)
        if rev == ld.revs[rec.step_id]:
            return True
        ld.state.steps[rec.step_id], ld.revs[rec.step_id] = fresh, rev
        return False

    async def _probe(
        self, ld: Loaded, rec: StepRecord, age: float, timing: RedispatchTiming
    ) -> None:
        """Learn the sequence of a dispatch made elsewhere, then check it like any other."""
        sent = await self._redispatch(ld, rec, bump=False, reason="probe")
        if sent is None or not sent.duplicate:
            return  # the re-publish stored a message (counted as a re-send) or failed
        present = await self._present(rec, sent.seq)
        if present is None:
            return
        action = decide(age, rec.redispatches, seq_known=True, present=present, timing=timing)
        if action is RedispatchAction.RESEND and await self._unchanged(ld, rec):
            await self._redispatch(ld, rec, bump=True, reason="lost")

    async def _orphaned(self, rec: StepRecord) -> bool:
        if self.liveness is None or not rec.worker_id:
            return False
        view = await self.liveness.view(rec.worker_id)
        age = _age(rec.started_at)
        ttl = self.config.liveness_ttl
        if not view.known:
            return not view.alive and age > ttl
        if not view.alive:
            return True
        return f"{rec.dag_id}:{rec.step_id}" not in view.steps and age > 2 * ttl

    def _count_resend(self, rec: StepRecord, reason: str, generation: int) -> None:
        self.redispatches += 1
        _log.info(
            "step.redispatched",
            dag_id=rec.dag_id,
            step_id=rec.step_id,
            reason=reason,
            generation=generation,
            resends=rec.redispatches + 1,
        )
        observe.emit(observe.STEP_REDISPATCHED, reason=reason)

    async def _redispatch(
        self, ld: Loaded, rec: StepRecord, *, bump: bool, reason: str
    ) -> PubAck | None:
        """Send ``rec``'s message again (as a new generation when ``bump``); its PubAck.

        A new generation is published first and then recorded, with the sequence the
        stream gave it, in one CAS: a worker that gets the message before the CAS lands
        reads the record still at the revision the message names and waits for it. If the
        CAS loses, the message names a revision the record moved past and is dropped.
        """
        crashpoint("sweep.before_resend")
        # A new generation is the revision it is written from (see Engine._dispatch_one).
        gen = ld.revs[rec.step_id] if bump else rec.generation
        env = await self.engine.build_envelope(ld, rec, gen)
        if env is None:
            return None  # doomed: the cascade in advance() settles it
        if not bump and dispatch_digest(env) != rec.dispatch_digest:
            # Only a message whose digest the record holds may run: a re-send that differs
            # from the first dispatch (or one dispatched before digests were recorded)
            # becomes a new generation instead.
            gen, bump = ld.revs[rec.step_id], True
            reason = "unknown" if reason == "probe" else reason
            ctx = {**env.trace_ctx, GENERATION_KEY: str(gen)}
            env = msgspec.structs.replace(env, trace_ctx=ctx)
        try:
            ack = await self.engine.send(env, gen)
        except PayloadTooLarge as exc:
            # It cannot ever be enqueued (e.g. its first dispatch's failing write was
            # lost): fail it now; advance() persists the failure and the cascade.
            ld.state.mark_failed(rec.step_id, *unenqueueable(rec.step_id, exc))
            return None
        if not bump:
            if ack is None or not ack.duplicate:
                # Nothing had that msg-id within the window: this publish stored it.
                self._count_resend(rec, reason, gen)
            return ack
        crashpoint("sweep.after_bump")
        new = msgspec.structs.replace(
            rec,
            generation=gen,
            dispatch_digest=dispatch_digest(env),
            attempt=0,
            worker_id="",
            started_at=datetime.now(UTC),
            redispatches=rec.redispatches + 1,
            dispatch_seq=ack.seq if ack is not None else 0,
        )
        ld.revs[rec.step_id] = await self.engine.store.put_step(
            rec.dag_id, rec.step_id, new, ld.revs[rec.step_id]
        )
        ld.state.steps[rec.step_id] = new
        self._count_resend(rec, reason, gen)
        return ack


def _event_key(ev: Event) -> tuple[str, bytes]:
    return (ev.dag_id, msgspec.json.encode(ev))


async def _settle(
    batch: list[tuple[Event | None, Delivery]], how: str, delay: float | None = None
) -> None:
    for _, delivery in batch:
        with contextlib.suppress(Exception):
            if how == "ack":
                await delivery.ack()
            else:
                await delivery.nak(delay)
