"""Breakpoints: ``break_before`` / ``break_after`` labels, armed per run, released by label.

A before-breakpoint keeps an armed step pending; an after-breakpoint lets the step run and
persist its result but holds its direct dependents. ``resume_breakpoint(dag, label)``
releases every instance that has *arrived* (deps satisfied for before, step done for
after) and carries the label; the label stays armed, so later steps stop again. Release
is monotonic (``released``); the ``blocked`` marks are advisory and never gate anything.
"""

from __future__ import annotations

import msgspec

from ebind.errors import StaleRevision
from ebind.logging import get_logger
from ebind.workflow.debug import BreakpointInfo, compute_breakpoints
from ebind.workflow.engine import Engine
from ebind.workflow.state import DAGState
from ebind.workflow.types import BPState, Event, EventKind, StepRecord, StepStatus

__all__ = ["list_breakpoints", "resume_breakpoint"]

_log = get_logger("ebind.workflow.breakpoints")
_ATTEMPTS = 5


async def _release(engine: Engine, rec: StepRecord, rev: int, position: str) -> bool:
    for _ in range(_ATTEMPTS):
        if position == "before":
            ok = rec.status is StepStatus.PENDING and rec.bp_before is not BPState.RELEASED
            new = msgspec.structs.replace(rec, bp_before=BPState.RELEASED, bp_blocked_at=None)
        else:
            ok = rec.status is StepStatus.DONE and rec.bp_after is not BPState.RELEASED
            new = msgspec.structs.replace(rec, bp_after=BPState.RELEASED, bp_blocked_at=None)
        if not ok:
            return False
        try:
            await engine.store.put_step(rec.dag_id, rec.step_id, new, rev)
            return True
        except StaleRevision:
            rec, rev = await engine.store.get_step(rec.dag_id, rec.step_id)
    raise StaleRevision(dag_id=rec.dag_id, step_id=rec.step_id)


async def resume_breakpoint(engine: Engine, dag_id: str, label: str) -> int:
    """Release every arrived breakpoint carrying ``label``; returns how many were released.

    Raises:
        DAGNotFound: no such DAG.
    """
    meta, _ = await engine.store.get_meta(dag_id)
    if meta.status.terminal:
        return 0
    listed = await engine.store.list_steps(dag_id)
    revs = {r.step_id: rev for r, rev in listed}
    st = DAGState(meta, {r.step_id: r for r, _ in listed})
    todo = [(s, "before") for s in st.blocked_at_before() if label in st.steps[s].break_before]
    todo += [(s, "after") for s in st.holding_at_after() if label in st.steps[s].break_after]
    released = 0
    for sid, pos in todo:
        if await _release(engine, st.steps[sid], revs[sid], pos):
            released += 1
            await engine.publish(
                Event(
                    kind=EventKind.BP_RESUMED,
                    dag_id=dag_id,
                    step_id=sid,
                    bp_position=pos,
                    bp_labels=[label],
                )
            )
    # Always, even with nothing released, so a crash after a release still converges.
    await engine.publish(Event(kind=EventKind.RESUMED, dag_id=dag_id, step_id=dag_id))
    _log.info("bp.resumed", dag_id=dag_id, label=label, released=released)
    return released


async def list_breakpoints(engine: Engine, dag_id: str) -> list[BreakpointInfo]:
    """Every declared breakpoint of the DAG with its armed/blocked/released state."""
    meta, _ = await engine.store.get_meta(dag_id)
    steps = [r for r, _ in await engine.store.list_steps(dag_id)]
    return compute_breakpoints(meta, steps)
