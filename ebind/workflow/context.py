"""Dynamic steps: ``await from_context(ctx).step(...)`` inside a DAG-dispatched handler.

``context_middleware`` puts a ContextDAG under ``ctx.extras["dag"]`` for tasks that carry a
``dag_id``. A dynamic step depends implicitly on the running (parent) step, so it cannot
run before the parent's handler returned successfully, and the parent's failure skips it.
A dynamic step is checked like a static one: its arguments against the
handler, its dependencies must exist, and it may not close a cycle.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from ebind.context import Context, current_context
from ebind.errors import DAGCanceled, DAGNotRunning, DuplicateStep, StaleRevision
from ebind.logging import get_logger
from ebind.retry import RetryPolicy
from ebind.wire import TaskEnvelope
from ebind.workflow.dag import Step, build_record, placement_of
from ebind.workflow.graph import check_dynamic_step, graph_of
from ebind.workflow.placement import rewrite_colocate_here
from ebind.workflow.types import (
    DAGMeta,
    DAGStatus,
    Event,
    EventKind,
    PlacementMode,
    PlacementSpec,
    StepRecord,
    StepStatus,
)

if TYPE_CHECKING:
    from ebind.worker.middleware import Handler, Middleware
    from ebind.workflow.workflow import Workflow

__all__ = [
    "EXTRAS_KEY",
    "ContextDAG",
    "context_middleware",
    "current_target",
    "current_worker_id",
    "from_context",
]

EXTRAS_KEY = "dag"
_log = get_logger("ebind.workflow.context")
_enc = msgspec.json.Encoder()


class ContextDAG:
    """The in-handler handle for adding steps to the running DAG."""

    def __init__(self, wf: Workflow, dag_id: str, parent: str, target: str, worker_id: str) -> None:
        self._wf = wf
        self.dag_id = dag_id
        self.parent_step_id = parent
        self.target = target
        self.worker_id = worker_id
        self.trace_ctx: dict[str, str] = {}
        """Trace context the steps added here carry (set by tracing middleware)."""

    async def step(
        self,
        step_id: str,
        fn: object,
        *args: Any,
        kwargs: Mapping[str, Any] | None = None,
        colocate_here: bool = False,
        optional: bool = False,
        retry: RetryPolicy | None = None,
        after: Iterable[Step | str] = (),
        after_any: Iterable[Step | str] = (),
        target: str | None = None,
        colocate_with: Step | str | None = None,
        follow_target_of: Step | str | None = None,
        break_before: Iterable[str] | str = (),
        break_after: Iterable[str] | str = (),
        wait_for_signals: Iterable[str] | str = (),
    ) -> Step:
        """Add a step that runs after the current one; re-adding the same id and task is a no-op.

        Raises:
            DAGCanceled: the DAG was canceled.
            DAGNotRunning: the DAG is finished (done or failed).
            DuplicateStep: the id is taken by a step running another task.
            InvalidArguments: bad arguments, or a dependency on an unknown step.
            CycleError: the step would close a cycle.
        """
        meta, _ = await self._wf.store.get_meta(self.dag_id)
        self._check_open(meta, step_id)
        spec = placement_of(target, colocate_with, follow_target_of)
        if colocate_here:
            spec = (PlacementSpec(mode=PlacementMode.COLOCATE_HERE), [])
        placement = rewrite_colocate_here(spec[0], self.parent_step_id)
        place_deps = [placement.step_id] if placement is not None and placement.step_id else []
        rec = build_record(
            self.dag_id,
            step_id,
            fn,
            args,
            kwargs,
            optional=optional,
            retry=retry or meta.default_policy,
            after=after,
            after_any=after_any,
            placement=(placement, place_deps),
            break_before=break_before,
            break_after=break_after,
            wait_for_signals=wait_for_signals,
            implicit_deps=[self.parent_step_id],
        )
        if meta.status in (DAGStatus.PAUSING, DAGStatus.PAUSED):
            rec = msgspec.structs.replace(rec, held=True, held_at=rec.added_at)
        if self.trace_ctx:
            rec = msgspec.structs.replace(rec, trace_ctx=dict(self.trace_ctx))
        if meta.run_id:
            rec = msgspec.structs.replace(rec, run_id=meta.run_id)
        return await self._add(rec, fn)

    async def _add(self, rec: StepRecord, fn: object) -> Step:
        """Create the record (checked against the DAG as stored) and announce it."""
        store, step_id = self._wf.store, rec.step_id
        listed = [r for r, _ in await store.list_steps(self.dag_id)]
        existing = {r.step_id: r for r in listed}
        if step_id in existing:
            return self._readd(existing[step_id], rec.fn_name, fn)
        check_dynamic_step(
            graph_of(listed), step_id, [*rec.deps, *rec.optional_deps], dag_id=self.dag_id
        )
        try:
            rev = await store.put_step(self.dag_id, step_id, rec, 0)
        except StaleRevision:
            current, _ = await store.get_step(self.dag_id, step_id)
            return self._readd(current, rec.fn_name, fn)
        # A cancel (or the DAG's end) may have landed after the check above and listed the
        # steps before this one existed: nothing would ever settle it, so it is canceled here.
        meta, _ = await store.get_meta(self.dag_id)
        if meta.status.terminal:
            with contextlib.suppress(StaleRevision):  # someone settled it already
                late = msgspec.structs.replace(
                    rec, status=StepStatus.CANCELED, finished_at=datetime.now(UTC)
                )
                await store.put_step(self.dag_id, step_id, late, rev)
            self._check_open(meta, step_id)
        _log.info("dag.step_added", dag_id=self.dag_id, step_id=step_id, parent=self.parent_step_id)
        await self._announce(step_id)
        return Step(self.dag_id, step_id, fn)

    def _check_open(self, meta: DAGMeta, step_id: str) -> None:
        """Raise unless the DAG can still take a step (it is not canceled or finished)."""
        if meta.status is DAGStatus.CANCELED:
            raise DAGCanceled(
                f"workflow: DAG {self.dag_id!r} is canceled; step {step_id!r} not added",
                dag_id=self.dag_id,
                step_id=step_id,
            )
        if meta.status.terminal:
            raise DAGNotRunning(
                f"workflow: DAG {self.dag_id!r} is {meta.status.value}; step {step_id!r} not "
                "added (a finished DAG runs nothing more)",
                dag_id=self.dag_id,
                step_id=step_id,
            )

    def _readd(self, existing: StepRecord, fn_name: str, fn: object) -> Step:
        if existing.fn_name != fn_name:
            raise DuplicateStep(
                f"workflow: step {existing.step_id!r} already exists in DAG {self.dag_id!r} "
                f"running {existing.fn_name!r}, not {fn_name!r}",
                dag_id=self.dag_id,
                step_id=existing.step_id,
            )
        # The parent is re-running after a retry: the step it added last time stands.
        return Step(self.dag_id, existing.step_id, fn)

    async def _announce(self, step_id: str) -> None:
        ev = Event(kind=EventKind.STEP_ADDED, dag_id=self.dag_id, step_id=step_id)
        try:
            await self._wf.engine.publish(ev)
        except Exception as exc:  # the parent's completion event re-evaluates the DAG anyway
            _log.warning("dag.step_added_publish_failed", dag_id=self.dag_id, error=str(exc))


def from_context(ctx: Context | None = None) -> ContextDAG | None:
    """The ContextDAG of the running DAG step (``ctx`` defaults to the current context)."""
    ctx = ctx if ctx is not None else current_context()
    if ctx is None:
        return None
    found = ctx.extras.get(EXTRAS_KEY)
    return found if isinstance(found, ContextDAG) else None


def current_target(ctx: Context | None = None) -> str:
    """The target the current task was sent to ("" outside a targeted task)."""
    ctx = ctx if ctx is not None else current_context()
    return ctx.target if ctx is not None else ""


def current_worker_id(ctx: Context | None = None) -> str:
    """The id of the worker running the current task ("" outside a task)."""
    ctx = ctx if ctx is not None else current_context()
    return ctx.worker_id if ctx is not None else ""


def context_middleware(wf: Workflow) -> Middleware:
    """A worker middleware that installs a ContextDAG for DAG-dispatched tasks."""

    def middleware(nxt: Handler) -> Handler:
        async def handler(ctx: Context, env: TaskEnvelope) -> bytes:
            if env.dag_id and env.step_id:
                ctx.extras[EXTRAS_KEY] = ContextDAG(
                    wf, env.dag_id, env.step_id, env.target, env.worker_id or ctx.worker_id
                )
            return await nxt(ctx, env)

        return handler

    from ebind.worker.middleware import steps_only

    # It touches only DAG steps, so plain tasks may still take the worker's flat path.
    steps_only(middleware)
    return middleware
