"""Operator actions on a DAG: cancel, pause, resume, delete — CAS with bounded retries.

Pause fences pending steps (``held``) before it flips the meta, so a scheduler that read
the DAG as running can no longer CAS a fenced step to running; the scheduler turns
``pausing`` into ``paused`` when the last in-flight step completes. Cancel turns pending
steps into ``canceled``; running steps may finish, but nothing further is scheduled (a
dispatched step that no worker has started yet is canceled by the hook when it arrives).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec

from ebind.errors import (
    DAGNotFound,
    DAGNotPaused,
    DAGNotRunning,
    DAGRunning,
    RecordCorrupt,
    StaleRevision,
)
from ebind.logging import get_logger
from ebind.workflow.history import drop_live
from ebind.workflow.protocols import StateStore
from ebind.workflow.types import DAGStatus, StepRecord, StepStatus

__all__ = ["cancel", "delete_dag", "fence_pending", "pause", "release_holds", "resume"]

_log = get_logger("ebind.workflow.control")
_ATTEMPTS = 5


def _now() -> datetime:
    return datetime.now(UTC)


async def _update_step(
    store: StateStore,
    rec: StepRecord,
    rev: int,
    change: Callable[[StepRecord], StepRecord | None],
) -> bool:
    """CAS ``change(rec)`` onto a step, re-reading on conflict; False if change declined."""
    for i in range(_ATTEMPTS):
        new = change(rec)
        if new is None:
            return False
        try:
            await store.put_step(rec.dag_id, rec.step_id, new, rev)
            return True
        except StaleRevision:
            await asyncio.sleep(0.01 * (i + 1))
            rec, rev = await store.get_step(rec.dag_id, rec.step_id)
    raise StaleRevision(dag_id=rec.dag_id, step_id=rec.step_id)


async def cancel(store: StateStore, dag_id: str) -> None:
    """Cancel a DAG: meta canceled at once, pending / not-yet-started steps canceled."""
    for _ in range(_ATTEMPTS):
        meta, rev = await store.get_meta(dag_id)
        if meta.status.terminal:
            return
        new = msgspec.structs.replace(meta, status=DAGStatus.CANCELED, finished_at=_now())
        try:
            await store.put_meta(dag_id, new, rev)
            break
        except StaleRevision:
            continue
    else:
        raise StaleRevision(f"workflow: could not cancel DAG {dag_id!r}", dag_id=dag_id)

    def to_canceled(r: StepRecord) -> StepRecord | None:
        # Running steps (dispatched ones included) may finish; a dispatched step whose
        # message is picked up later is canceled by the hook instead of run.
        if r.status is not StepStatus.PENDING:
            return None
        return msgspec.structs.replace(r, status=StepStatus.CANCELED, finished_at=_now())

    for rec, srev in await store.list_steps(dag_id):
        await _update_step(store, rec, srev, to_canceled)
    await drop_live(store, dag_id)
    _log.info("dag.canceled", dag_id=dag_id)


async def fence_pending(store: StateStore, dag_id: str) -> bool:
    """Hold every pending step; returns whether any step is in flight (re-lists up to 5x)."""
    in_flight = False

    def hold(r: StepRecord) -> StepRecord | None:
        nonlocal in_flight
        if r.status is StepStatus.RUNNING:
            # Also when a re-read after a lost CAS finds it dispatched meanwhile: the DAG
            # must then be pausing, not paused, until it finishes.
            in_flight = True
        if r.status is not StepStatus.PENDING or r.held:
            return None
        return msgspec.structs.replace(r, held=True, held_at=_now())

    for _ in range(_ATTEMPTS):
        changed, in_flight = False, False
        for rec, rev in await store.list_steps(dag_id):
            if await _update_step(store, rec, rev, hold):
                changed = True
        if not changed:
            return in_flight
    return True


async def release_holds(store: StateStore, dag_id: str) -> int:
    """Clear the pause fence of every held step; returns how many were released."""

    def release(r: StepRecord) -> StepRecord | None:
        if not r.held:
            return None
        return msgspec.structs.replace(r, held=False, held_at=None)

    n = 0
    for rec, rev in await store.list_steps(dag_id):
        if rec.held and await _update_step(store, rec, rev, release):
            n += 1
    return n


async def pause(store: StateStore, dag_id: str) -> None:
    """Request a graceful pause (pausing while steps run, paused when none do).

    Raises:
        DAGNotRunning: the DAG is not running (also when already pausing or paused).
    """
    for _ in range(_ATTEMPTS):
        meta, rev = await store.get_meta(dag_id)
        if meta.status is not DAGStatus.RUNNING:
            raise DAGNotRunning(
                f"ebind: cannot pause DAG {dag_id}: status is {meta.status.value}: "
                "workflow: DAG not running",
                dag_id=dag_id,
            )
        in_flight = await fence_pending(store, dag_id)
        status = DAGStatus.PAUSING if in_flight else DAGStatus.PAUSED
        new = msgspec.structs.replace(meta, status=status, paused_at=None if in_flight else _now())
        try:
            await store.put_meta(dag_id, new, rev)
        except StaleRevision:
            continue
        _log.info("dag.pause_requested", dag_id=dag_id, status=status.value)
        return
    raise StaleRevision(f"workflow: could not pause DAG {dag_id!r}", dag_id=dag_id)


async def resume(store: StateStore, dag_id: str) -> None:
    """Resume a paused DAG (meta running, holds released); the caller publishes ``resumed``.

    Raises:
        DAGNotPaused: the DAG is not paused (running, pausing, or finished).
    """
    for _ in range(_ATTEMPTS):
        meta, rev = await store.get_meta(dag_id)
        if meta.status is not DAGStatus.PAUSED:
            raise DAGNotPaused(
                f"ebind: cannot resume DAG {dag_id}: status is {meta.status.value}: "
                "workflow: DAG not paused",
                dag_id=dag_id,
            )
        new = msgspec.structs.replace(meta, status=DAGStatus.RUNNING, paused_at=None)
        try:
            await store.put_meta(dag_id, new, rev)
        except StaleRevision:
            continue
        await release_holds(store, dag_id)
        _log.info("dag.resumed", dag_id=dag_id)
        return
    raise StaleRevision(f"workflow: could not resume DAG {dag_id!r}", dag_id=dag_id)


async def delete_dag(
    store: StateStore, dag_id: str, *, force: bool = False, drain_timeout: float = 30.0
) -> None:
    """Delete every record of a DAG (results, steps, signals, the live entry, then meta).

    An unfinished DAG is refused unless ``force``: it is then canceled first and its
    running steps are drained (dispatched ones that never started are canceled at once,
    started ones get ``drain_timeout`` seconds to finish), so no step writes a record
    after the delete. A step still running past that writes, at most, a result under its
    own run, which a DAG submitted again with the same id never reads.

    Every key under the DAG's id goes, records no reader could use included; a DAG whose
    meta no reader can use is deleted like a finished one (nothing can run it).

    Raises:
        DAGRunning: the DAG has not finished and ``force`` is False.
        DAGNotFound: the DAG had no meta record (cleanup was still attempted).
    """
    unusable = False
    try:
        meta, _ = await store.get_meta(dag_id)
    except DAGNotFound:
        meta = None
    except RecordCorrupt as exc:
        meta, unusable = None, True
        _log.warning("dag.meta_unusable", dag_id=dag_id, error=str(exc))
    if meta is not None and not meta.status.terminal:
        if not force:
            raise DAGRunning(
                f"workflow: DAG {dag_id!r} is {meta.status.value}; cancel it first or "
                "delete with force=True (cancels it and waits for its running steps)",
                dag_id=dag_id,
            )
        await cancel(store, dag_id)
        await _drain(store, dag_id, drain_timeout)
    await store.delete_live(dag_id)
    # Key by key from a listing of the keys, not of the records: a record no reader could
    # use must not outlive its DAG (a later submit of the id would trip over it).
    await store.delete_dag_keys(dag_id)
    if meta is None and not unusable:
        raise DAGNotFound(f"workflow: DAG {dag_id!r} not found", dag_id=dag_id)
    _log.info("dag.deleted", dag_id=dag_id)


async def _drain(store: StateStore, dag_id: str, wait_for: float) -> None:
    """Wait until no step of a canceled DAG runs; cancel dispatched, unstarted ones now."""

    def unstarted_to_canceled(r: StepRecord) -> StepRecord | None:
        # attempt 0: no worker has claimed the dispatch; the hook turns a message it
        # meets for a canceled step into a no-op, so nobody else would finish it.
        if r.status is not StepStatus.RUNNING or r.attempt != 0 or r.worker_id:
            return None
        return msgspec.structs.replace(r, status=StepStatus.CANCELED, finished_at=_now())

    deadline = asyncio.get_running_loop().time() + wait_for
    delay = 0.05
    while True:
        running = [
            (rec, rev)
            for rec, rev in await store.list_steps(dag_id)
            if rec.status is StepStatus.RUNNING
        ]
        if not running:
            return
        if asyncio.get_running_loop().time() >= deadline:
            _log.warning(
                "dag.delete_drain_timeout",
                dag_id=dag_id,
                running=[rec.step_id for rec, _ in running],
            )
            return
        for rec, rev in running:
            if rec.attempt == 0 and not rec.worker_id:
                # StaleRevision: it keeps changing, so a worker has it; wait for it below.
                with contextlib.suppress(StaleRevision):
                    await _update_step(store, rec, rev, unstarted_to_canceled)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)
