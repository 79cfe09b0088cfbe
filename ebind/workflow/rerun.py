"""Retry what failed: failed steps (and the steps skipped because of them) back to pending.

Writes go in the order that keeps every crash point safe: the live-index entry first
(the sweep must see the DAG once it runs again), then each step record (CAS; its result
under the run is removed first so the rerun can store a new one), then the meta back to
``running``. A crash in between leaves a finished DAG with some pending steps, which a
second retry completes; the caller publishes a ``resumed`` event so the scheduler
dispatches at once instead of at the next sweep.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import msgspec

from ebind.errors import RetryRefused, StaleRevision
from ebind.logging import get_logger
from ebind.workflow.lifecycle import (
    LiveEntry,
    encode_live,
    reset_for_retry,
    retry_plan,
    retry_roots,
    retryable_dag,
)
from ebind.workflow.protocols import StateStore
from ebind.workflow.types import DAGStatus

__all__ = ["retry"]

_log = get_logger("ebind.workflow.rerun")
_ATTEMPTS = 5


async def retry(store: StateStore, dag_id: str, step_id: str | None = None) -> list[str]:
    """Put the failed steps (or ``step_id``) and their skipped dependents back to pending.

    Returns the ids of the steps that will run again, roots first.

    Raises:
        DAGNotFound: no such DAG.  StepNotFound: no such step.
        RetryRefused: nothing failed, the step did not fail, or the DAG was canceled or
            is paused.
    """
    for _ in range(_ATTEMPTS):
        meta, meta_rev = await store.get_meta(dag_id)
        retryable_dag(meta)
        listed = await store.list_steps(dag_id)
        steps = {rec.step_id: rec for rec, _ in listed}
        revs = {rec.step_id: rev for rec, rev in listed}
        roots = retry_roots(steps, step_id, finished=meta.status.terminal)
        plan = retry_plan(steps, roots)
        await store.put_live(
            dag_id, encode_live(LiveEntry(at=datetime.now(UTC), run_id=meta.run_id))
        )
        try:
            for sid in plan:
                rec = steps[sid]
                await store.delete_result(dag_id, sid, rec.run_id)
                await store.put_step(dag_id, sid, reset_for_retry(rec, revs[sid]), revs[sid])
            if meta.status.terminal:
                running = msgspec.structs.replace(meta, status=DAGStatus.RUNNING, finished_at=None)
                await store.put_meta(dag_id, running, meta_rev)
        except StaleRevision:
            # A step or the DAG moved meanwhile (a late completion): plan again from a
            # fresh read; steps already reset read as pending and are not retried twice.
            await asyncio.sleep(0.02)
            continue
        _log.info("dag.retried", dag_id=dag_id, steps=plan)
        return plan
    raise RetryRefused(
        f"workflow: DAG {dag_id!r} kept changing while the retry was written; try again",
        dag_id=dag_id,
    )
