"""StepHook: the seam through which the worker reports DAG step outcomes to the workflow."""

from __future__ import annotations

from typing import Protocol

from ebind.wire import TaskEnvelope, TaskError

__all__ = ["StepFailedEarlier", "StepHook", "StepUnproven"]


class StepUnproven(Exception):
    """Raised by ``on_step_started``: the message is not the scheduler's dispatch of the step.

    The worker dead-letters its raw bytes with kind ``step_unproven`` and terminates it;
    no handler runs, no response is sent and ``on_step_failed`` is not called (the step
    belongs to its real dispatch, which this message must not touch).
    """


class StepFailedEarlier(Exception):
    """Raised by ``on_step_started``: this very dispatch already failed the step.

    A delivery that failed the step for good can die (or lose the server) after the record
    says failed and before its dead letter is stored; the message then comes back. The
    worker stores the dead letter from ``error`` (the failure on record) and terminates
    the message, without running the handler again.
    """

    def __init__(self, error: TaskError, attempt: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.attempt = attempt


class StepHook(Protocol):
    """Called by the worker for envelopes that carry ``dag_id`` and ``step_id``.

    ``env.attempt`` and ``env.worker_id`` are filled in by the worker. Raising from any
    method makes the worker nak the message (with the policy's delay) instead of acking,
    except :class:`StepUnproven` and :class:`StepFailedEarlier` from ``on_step_started``.
    """

    async def on_step_started(self, env: TaskEnvelope) -> bool:
        """Claim the step for this attempt; False = skip the handler and ack (stale/terminal)."""
        ...

    async def on_step_done(self, env: TaskEnvelope, result: bytes) -> None:
        """Persist the result and completion, fenced by ``env.attempt``."""
        ...

    async def on_step_failed(self, env: TaskEnvelope, error: TaskError) -> None:
        """Persist a terminal failure, fenced by ``env.attempt``."""
        ...

    def on_step_released(self, env: TaskEnvelope, redeliver_in: float) -> None:
        """Forget what a delivery handed back (nak'd) without an outcome claimed here.

        It comes back in ``redeliver_in`` seconds. No IO; optional (a hook without it is
        not called).
        """
        ...
