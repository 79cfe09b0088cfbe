"""Workflow: the facade bundling store, bus and enqueuer — submit target, results, operations."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

from ebind.codec import decode_result
from ebind.errors import (
    DAGNotFound,
    InvalidArguments,
    StepCanceled,
    StepFailed,
    StepNotFound,
    StepSkipped,
)
from ebind.future import check_timeout
from ebind.logging import get_logger
from ebind.workflow import control, rerun
from ebind.workflow._transient import is_transient
from ebind.workflow.breakpoints import list_breakpoints, resume_breakpoint
from ebind.workflow.context import context_middleware
from ebind.workflow.dag import Step
from ebind.workflow.debug import BreakpointInfo, DAGDebug, SignalInfo, build_debug, write_debug
from ebind.workflow.engine import Engine
from ebind.workflow.hook import StepHook
from ebind.workflow.liveness import Liveness
from ebind.workflow.local import LocalDispatches
from ebind.workflow.protocols import Enqueuer, EventBus, LeaderElector, StateStore
from ebind.workflow.query import list_dags
from ebind.workflow.redispatch import Presence
from ebind.workflow.scheduler import Scheduler, SchedulerConfig
from ebind.workflow.signals import MAX_SIGNAL_PAYLOAD, list_signals, send_signal
from ebind.workflow.types import (
    DEFAULT_MAX_STEP_ERROR_BYTES,
    DAGMeta,
    DAGStatus,
    Event,
    EventKind,
    StepRecord,
    StepStatus,
)

if TYPE_CHECKING:
    from ebind.worker.middleware import Middleware

__all__ = ["Workflow"]

_log = get_logger("ebind.workflow")
_EPOCH = datetime.min.replace(tzinfo=UTC)


class _AlwaysLeader:
    def is_leader(self) -> bool:
        return True


class Workflow:
    """Store + bus + enqueuer (+ elector): what DAGs are submitted to and queried through.

    Args:
        store: state store (MemStore, NatsStore).
        bus: event bus (MemBus, NatsBus).
        enqueuer: places step tasks on the TASKS stream.
        elector: scheduler leadership (None: always leader).
        nak_delay: redelivery delay for events seen by a non-leader.
        sweep_check_interval: how often the scheduler polls leadership.
        sweep_timeout: bound of one reconciliation sweep.
        sweep_interval: period of the reconciliation sweep while leader.
        max_step_error_bytes: cap of persisted failure messages (<0: keep only the kind).
        liveness: worker liveness records for orphaned-step detection (None: off).
        liveness_interval: seconds between a worker's liveness announcements.
        liveness_ttl: silence after which a worker counts as gone.
        dispatch_grace: age before which a dispatched, unstarted step is never looked at.
        redispatch_after: age after which such a step is re-sent if its message is gone
            from the tasks stream; each further re-send waits twice as long.
        redispatch_cap: longest wait between two re-sends of one step.
        presence: looks a step's message up in the tasks stream (None: unknown, so a
            step past ``redispatch_after`` is re-sent, backed off).
        registry: task registry for typed result decoding (optional).
        start_write_delay: steps finishing sooner skip the separate ``running`` write
            (see StepHook); 0 writes it before every handler.
        dag_history: seconds a finished DAG is kept before the scheduler leader removes
            it (0: kept until ``ebind dag gc`` or ``delete_dag``).
        history_interval: seconds between two removals of old history while leader
            (default: a tenth of ``dag_history``, between one minute and one hour).
    """

    def __init__(
        self,
        store: StateStore,
        bus: EventBus,
        enqueuer: Enqueuer,
        *,
        elector: LeaderElector | None = None,
        nak_delay: float = 1.0,
        sweep_check_interval: float = 5.0,
        sweep_timeout: float = 60.0,
        sweep_interval: float = 30.0,
        max_step_error_bytes: int = DEFAULT_MAX_STEP_ERROR_BYTES,
        liveness: Liveness | None = None,
        liveness_interval: float = 3.0,
        liveness_ttl: float = 15.0,
        dispatch_grace: float = 10.0,
        redispatch_after: float = 240.0,
        redispatch_cap: float = 3600.0,
        presence: Presence | None = None,
        registry: Any = None,
        start_write_delay: float = 0.05,
        dag_history: float = 0.0,
        history_interval: float | None = None,
    ) -> None:
        if not dag_history >= 0 or (history_interval is not None and not history_interval > 0):
            raise InvalidArguments(
                f"workflow: dag_history must be >= 0 seconds and history_interval > 0, got "
                f"{dag_history!r} and {history_interval!r}"
            )
        self.store = store
        self.bus = bus
        self.enqueuer = enqueuer
        self.elector: LeaderElector = elector or _AlwaysLeader()
        self.max_step_error_bytes = max_step_error_bytes
        self.max_signal_payload = MAX_SIGNAL_PAYLOAD
        self.liveness = liveness
        self.liveness_interval = liveness_interval
        self.registry = registry
        self.start_write_delay = start_write_delay
        self.local = LocalDispatches()
        """The engine's dispatches, noted once a worker here has the hook (see hook())."""
        self.engine = Engine(store, bus, enqueuer)
        self.config = SchedulerConfig(
            nak_delay=nak_delay,
            sweep_check_interval=sweep_check_interval,
            sweep_interval=sweep_interval,
            sweep_timeout=sweep_timeout,
            dispatch_grace=dispatch_grace,
            redispatch_after=redispatch_after,
            redispatch_cap=redispatch_cap,
            liveness_ttl=liveness_ttl,
            history=dag_history,
            collect_interval=(
                history_interval
                if history_interval is not None
                else min(max(dag_history / 10, 60.0), 3600.0)
            ),
        )
        self.scheduler = Scheduler(
            self.engine, self.elector, config=self.config, liveness=liveness, presence=presence
        )
        self._hook: StepHook | None = None
        self._sched_task: asyncio.Task[None] | None = None
        self._sched_users = 0

    # -- construction --------------------------------------------------------------------

    @classmethod
    async def from_nats(cls, nc: Any, replicas: int = 1, **options: Any) -> Workflow:
        """A Workflow on NATS: NatsStore, NatsBus, an enqueuer publishing to EBIND_TASKS."""
        from ebind.workflow._nats import build_from_nats

        return await build_from_nats(cls, nc, replicas, **options)

    @classmethod
    def from_app(cls, app: Any, **options: Any) -> Workflow:
        """The Workflow behind ``app.workflow`` (the app must be connected)."""
        from ebind.workflow._nats import build_from_app

        return build_from_app(cls, app, **options)

    def with_elector(self, elector: LeaderElector) -> Workflow:
        """Replace the leader elector; returns self."""
        self.elector = elector
        self.scheduler.elector = elector
        return self

    # -- worker seams --------------------------------------------------------------------

    def hook(self) -> StepHook:
        """The StepHook for the worker (one per Workflow)."""
        if self._hook is None:
            self._hook = StepHook(
                self.store,
                self.bus,
                max_step_error_bytes=self.max_step_error_bytes,
                liveness=self.liveness,
                liveness_interval=self.liveness_interval,
                start_write_delay=self.start_write_delay,
                local=self.local,
            )
            # A worker in this process proves the steps this process dispatched from what
            # the dispatch wrote (ebind.workflow.local); without one, nothing is noted.
            self.engine.local = self.local
        return self._hook

    def context_middleware(self) -> Middleware:
        """Worker middleware that makes ``from_context(ctx)`` work in DAG steps."""
        return context_middleware(self)

    async def run_scheduler(self) -> None:
        """Run the scheduler (and the elector's lease loop) until cancelled.

        Several workers of one App share its Workflow: concurrent calls share one
        scheduler, which stops when the last caller is cancelled.
        """
        self._sched_users += 1
        try:
            if self._sched_task is None or self._sched_task.done():
                self._sched_task = asyncio.get_running_loop().create_task(self._run_scheduler())
            await asyncio.shield(self._sched_task)
        finally:
            self._sched_users -= 1
            task = self._sched_task
            if self._sched_users == 0 and task is not None and not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=5.0)

    async def _run_scheduler(self) -> None:
        run_elector = getattr(self.elector, "run", None)
        if not callable(run_elector):
            await self.scheduler.run()
            return
        async with asyncio.TaskGroup() as tg:
            tg.create_task(run_elector())
            tg.create_task(self.scheduler.run())

    async def close(self) -> None:
        """Stop background work started by the hook (liveness announcements)."""
        if self._hook is not None:
            await self._hook.close()

    # -- results -------------------------------------------------------------------------

    async def result(
        self,
        dag_id: str,
        step: Step | str,
        timeout: float | None = None,  # noqa: ASYNC109 - the public API names it `timeout`
    ) -> Any:
        """Wait for a step's result, from any process; typed when the handler is known.

        Raises:
            StepFailed / StepSkipped / StepCanceled: the step ended without a result.
            DAGNotFound: no such DAG.  StepNotFound: no such step in a finished DAG.
            TimeoutError: ``timeout`` seconds passed first.
            InvalidArguments: ``timeout`` is not None or a finite number >= 0.
        """
        step_id = step.id if isinstance(step, Step) else step
        async with asyncio.timeout(check_timeout(timeout)):
            meta, _ = await self.store.get_meta(dag_id)
            run = meta.run_id
            watch = asyncio.ensure_future(_first(self.store.watch_result(dag_id, step_id, run)))
            try:
                raw, rec = await self._wait_done(dag_id, step_id, watch, run)
            finally:
                await _stop_watch(watch)
        return self._decode(rec, step, raw)

    async def _wait_done(
        self, dag_id: str, step_id: str, watch: asyncio.Future[bytes], run: str
    ) -> tuple[bytes, StepRecord]:
        delay = 0.01
        while True:
            raw: bytes | None = None
            try:
                rec = await self._step_or_none(dag_id, step_id)
                if rec is not None and rec.run_id != run:
                    # The DAG was deleted and submitted again while we waited: this
                    # record belongs to another run than the one the caller asked about.
                    raise DAGNotFound(
                        f"workflow: DAG {dag_id!r} was deleted and submitted again",
                        dag_id=dag_id,
                    )
                if rec is not None and rec.status is StepStatus.DONE:
                    raw = _watched(watch) or await self._read_result(rec)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                # A cluster election or reconnect: the caller's timeout bounds the wait.
                rec = None
            if rec is not None:
                if raw is not None:
                    return raw, rec
                _raise_for(rec)
            if not watch.done():
                await asyncio.wait({watch}, timeout=delay)
                if watch.done():
                    # The result is stored and the record turns done right after it:
                    # read again at once rather than after the grown poll interval.
                    delay = 0.005
                    continue
            else:
                await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _step_or_none(self, dag_id: str, step_id: str) -> StepRecord | None:
        try:
            rec, _ = await self.store.get_step(dag_id, step_id)
            return rec
        except StepNotFound:
            meta, _ = await self.store.get_meta(dag_id)
            if meta.status.terminal:
                raise StepNotFound(
                    f"workflow: step {step_id!r} not found in DAG {dag_id!r}",
                    dag_id=dag_id,
                    step_id=step_id,
                ) from None
            return None  # maybe a dynamic step not added yet

    async def _read_result(self, rec: StepRecord) -> bytes | None:
        try:
            return await self.store.get_result(rec.dag_id, rec.step_id, rec.run_id)
        except StepNotFound:
            return None

    def _decode(self, rec: StepRecord, step: Step | str, raw: bytes) -> Any:
        spec = getattr(step.fn, "spec", None) if isinstance(step, Step) else None
        if spec is None and self.registry is not None:
            spec = self.registry.get(rec.fn_name)
        tp = getattr(spec, "return_type", Any)
        return decode_result(tp, raw)

    async def wait(
        self,
        dag_id: str,
        until: Iterable[DAGStatus] = (DAGStatus.DONE, DAGStatus.FAILED, DAGStatus.CANCELED),
        timeout: float | None = None,  # noqa: ASYNC109 - mirrors result(timeout=)
    ) -> DAGMeta:
        """Wait until the DAG's status is one of ``until`` (default: finished); returns its meta.

        Raises:
            DAGNotFound: no such DAG.  TimeoutError: ``timeout`` seconds passed first.
        """
        want = frozenset(until)
        delay = 0.01
        async with asyncio.timeout(check_timeout(timeout)):
            while True:
                meta, _ = await self.store.get_meta(dag_id)
                if meta.status in want:
                    return meta
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.25)

    # -- operations ----------------------------------------------------------------------

    async def cancel(self, dag_id: str) -> None:
        """Cancel a DAG: pending steps canceled now, running ones may finish."""
        await control.cancel(self.store, dag_id)

    async def pause(self, dag_id: str) -> None:
        """Pause a running DAG gracefully (DAGNotRunning otherwise)."""
        await control.pause(self.store, dag_id)

    async def resume(self, dag_id: str) -> None:
        """Resume a paused DAG (DAGNotPaused otherwise)."""
        await control.resume(self.store, dag_id)
        await self.engine.publish(Event(kind=EventKind.RESUMED, dag_id=dag_id, step_id=dag_id))

    async def delete_dag(
        self, dag_id: str, *, force: bool = False, drain_timeout: float = 30.0
    ) -> None:
        """Delete every record of a finished DAG; ``force`` cancels and drains a live one.

        Raises:
            DAGRunning: the DAG has not finished and ``force`` is False.
            DAGNotFound: no such DAG.
        """
        await control.delete_dag(self.store, dag_id, force=force, drain_timeout=drain_timeout)

    async def retry(self, dag_id: str) -> list[str]:
        """Run every failed step again (and the steps skipped because of them).

        The steps go back to pending with a new generation and the DAG back to running;
        returns the ids of the steps that will run again.

        Raises:
            DAGNotFound: no such DAG.  RetryRefused: no failed step, or the DAG was
                canceled or is paused.
        """
        return await self._retry(dag_id, None)

    async def retry_step(self, dag_id: str, step_id: str) -> list[str]:
        """Run one failed, skipped or canceled step again (and what was skipped after it).

        Raises:
            DAGNotFound / StepNotFound: no such DAG or step.  RetryRefused: the step did
                not fail, or the DAG was canceled or is paused.
        """
        return await self._retry(dag_id, step_id)

    async def _retry(self, dag_id: str, step_id: str | None) -> list[str]:
        plan = await rerun.retry(self.store, dag_id, step_id)
        # A full read by the scheduler (a resumed event) dispatches the reset steps now.
        await self.engine.publish(Event(kind=EventKind.RESUMED, dag_id=dag_id, step_id=dag_id))
        return plan

    async def info(self, dag_id: str) -> tuple[DAGMeta, list[StepRecord]]:
        """The DAG's meta and step records (by added_at, then id)."""
        meta, _ = await self.store.get_meta(dag_id)
        steps = [r for r, _ in await self.store.list_steps(dag_id)]
        steps.sort(key=lambda r: (r.added_at or _EPOCH, r.step_id))
        return meta, steps

    async def debug(self, dag_id: str) -> DAGDebug:
        """A structured snapshot of the DAG (DAGNotFound if missing)."""
        meta, steps = await self.info(dag_id)
        sigs = await self.store.list_signals(dag_id)
        return build_debug(meta, steps, sigs, datetime.now(UTC))

    async def debug_print(self, dag_id: str, file: IO[str] | None = None) -> None:
        """Write a human-readable report of the DAG (stdout by default)."""
        write_debug(file or sys.stdout, await self.debug(dag_id))

    async def list_dags(
        self, labels: Iterable[str] | str = (), status: DAGStatus | None = None
    ) -> list[DAGMeta]:
        """DAGs carrying every label in ``labels`` (and in ``status``), newest first.

        An unfinished ``status`` (running, pausing, paused) reads only the live index, so
        its cost does not grow with the finished history.
        """
        return await list_dags(self.store, labels, status)

    async def signal(self, dag_id: str, name: str, payload: Any = None) -> bool:
        """Deliver a signal; False if it was already delivered (first wins) or the DAG ended."""
        return await send_signal(self.engine, dag_id, name, payload, limit=self.max_signal_payload)

    async def list_signals(self, dag_id: str) -> list[SignalInfo]:
        """Delivered and awaited signals of a DAG."""
        return await list_signals(self.engine, dag_id)

    async def resume_breakpoint(self, dag_id: str, label: str) -> int:
        """Release the stopped breakpoints carrying ``label``; returns how many."""
        return await resume_breakpoint(self.engine, dag_id, label)

    async def list_breakpoints(self, dag_id: str) -> list[BreakpointInfo]:
        """Every declared breakpoint of the DAG and its state."""
        return await list_breakpoints(self.engine, dag_id)


def _raise_for(rec: StepRecord) -> None:
    if rec.status is StepStatus.FAILED:
        raise StepFailed(
            f"workflow: step failed: {rec.error_kind}: {rec.error_message}",
            dag_id=rec.dag_id,
            step_id=rec.step_id,
            error_kind=rec.error_kind,
            error_message=rec.error_message,
        )
    if rec.status is StepStatus.SKIPPED:
        raise StepSkipped(
            f"workflow: step {rec.step_id!r} skipped", dag_id=rec.dag_id, step_id=rec.step_id
        )
    if rec.status is StepStatus.CANCELED:
        raise StepCanceled(
            f"workflow: step {rec.step_id!r} canceled", dag_id=rec.dag_id, step_id=rec.step_id
        )


def _watched(watch: asyncio.Future[bytes]) -> bytes | None:
    """The watch's result if it delivered one (a failed watch falls back to reading)."""
    if watch.done() and not watch.cancelled() and watch.exception() is None:
        return watch.result()
    return None


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


async def _stop_watch(watch: asyncio.Future[bytes]) -> None:
    """Cancel the result watch and let it unsubscribe while the connection is open.

    A cancel can be lost inside a client request that completes at the same moment
    (asyncio.wait_for in 3.11), so it is repeated until the watch has really ended.
    """
    watch.add_done_callback(_retrieve)
    for _ in range(5):
        watch.cancel()
        done, _ = await asyncio.wait({watch}, timeout=0.05)
        if done:
            return


async def _first(it: Any) -> bytes:
    async for data in it:
        return bytes(data)
    raise DAGNotFound("workflow: result watch ended")
