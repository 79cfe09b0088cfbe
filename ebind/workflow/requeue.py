"""A dead-lettered DAG step is requeued through its DAG: retry_step, then wait for dispatch.

Publishing the dead message again cannot work: the step record has moved on from the
generation the message carries, so the worker drops it as stale. The retry gives the step
a new generation instead, and the dead letter is kept until the scheduler has dispatched
the rerun, so a requeue that nobody dispatches loses nothing.
"""

from __future__ import annotations

import asyncio

from ebind.errors import RetryRefused, WorkflowError
from ebind.logging import get_logger
from ebind.wire import TaskEnvelope
from ebind.workflow.types import StepStatus
from ebind.workflow.workflow import Workflow

__all__ = ["requeue_step"]

_log = get_logger("ebind.workflow.requeue")


async def requeue_step(wf: Workflow, env: TaskEnvelope, seq: int, *, wait_for: float) -> None:
    """Retry the step ``env`` ran and return once its rerun is dispatched.

    A step an earlier requeue already reset (pending or running again) is only waited
    for, so a requeue that timed out can be repeated.

    Raises:
        RetryRefused: the step is not failed (done, or the DAG was canceled or paused);
            the message points to ``ebind dag retry``.
        WorkflowError: no scheduler dispatched the rerun within ``wait_for`` seconds.
    """
    dag_id, step_id = env.dag_id, env.step_id
    try:
        await wf.retry_step(dag_id, step_id)
    except RetryRefused as exc:
        rec, _ = await wf.store.get_step(dag_id, step_id)
        if rec.status not in (StepStatus.PENDING, StepStatus.RUNNING):
            raise RetryRefused(
                f"dead letter {seq} is step {step_id!r} of DAG {dag_id!r}: {exc}; a DAG "
                f"step runs again only through its DAG (`ebind dag retry {dag_id} --step "
                f"{step_id}`); the dead letter is kept",
                dag_id=dag_id,
                step_id=step_id,
            ) from None
    delay = 0.02
    try:
        async with asyncio.timeout(wait_for):
            while True:
                rec, _ = await wf.store.get_step(dag_id, step_id)
                if rec.status is not StepStatus.PENDING:
                    _log.info("dlq.step_requeued", dag_id=dag_id, step_id=step_id, seq=seq)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
    except TimeoutError:
        raise WorkflowError(
            f"step {step_id!r} of DAG {dag_id!r} will run again, but no scheduler "
            f"dispatched it within {wait_for:g}s (is a worker with the scheduler running?); "
            f"dead letter {seq} is kept until it is: requeue it again later",
            dag_id=dag_id,
            step_id=step_id,
        ) from None
