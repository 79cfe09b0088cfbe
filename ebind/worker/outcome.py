"""Pure decisions of the worker: what an exception means, and what to do with a failed attempt.

Nothing here touches NATS or the event loop: the worker loop asks, this module answers.

- :func:`classify` turns whatever a handler raised into a :class:`~ebind.wire.TaskError`.
- :func:`decide` turns a ``TaskError`` + ``RetryPolicy`` + attempt number into
  :class:`Ack`, :class:`Retry` or :class:`DeadLetter`.
- :func:`effective_policy` applies the precedence envelope > handler > worker default.
- :func:`crash_looped` is the crash-loop guard: a delivery past the attempt cap means earlier
  attempts died without reporting, so the task is dead-lettered before it runs again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ebind.errors import EbindError
from ebind.horizon import TaskHorizon, horizon_error
from ebind.retry import RetryPolicy
from ebind.wire import ErrorKind, TaskError

__all__ = [
    "MAX_ERROR_MESSAGE",
    "Ack",
    "AttemptError",
    "DeadLetter",
    "Outcome",
    "Retry",
    "classify",
    "crash_looped",
    "decide",
    "effective_policy",
    "error_message",
]

MAX_ERROR_MESSAGE = 64 * 1024
"""Longest error message kept in a TaskError; the rest is cut so a DLQ entry stays publishable."""


class AttemptError(EbindError):
    """Raised through the middleware chain when an attempt failed; ``error`` says how.

    Middlewares see every failure as this exception (``recover`` is innermost and converts
    anything a handler raises), so they can inspect ``error.kind`` and ``error.retryable``.
    """

    def __init__(self, error: TaskError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True, slots=True)
class Ack:
    """The attempt succeeded: acknowledge the message."""


@dataclass(frozen=True, slots=True)
class Retry:
    """The attempt failed but may run again after ``delay`` seconds (nak with delay)."""

    delay: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The attempt failed for good: respond, write a DLQ entry, terminate the message."""

    error: TaskError


Outcome = Ack | Retry | DeadLetter


def error_message(exc: BaseException) -> str:
    """``str(exc)`` (or the type name when empty), cut to :data:`MAX_ERROR_MESSAGE` characters."""
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not break the worker
        text = ""
    if not text:
        text = type(exc).__name__
    elif not isinstance(exc, EbindError):
        text = f"{type(exc).__name__}: {text}"
    if len(text) > MAX_ERROR_MESSAGE:
        text = text[:MAX_ERROR_MESSAGE] + "…[truncated]"
    return text


def classify(
    exc: BaseException,
    *,
    dont_retry: tuple[type[BaseException], ...] = (),
    non_retryable: tuple[type[BaseException], ...] = (),
) -> TaskError:
    """Map an exception raised by a handler to the TaskError the worker reports.

    Args:
        exc: what the handler (or a middleware) raised.
        dont_retry: the handler's ``dont_retry`` types; a match is not retried.
        non_retryable: exception types that always mean "do not retry"
            (``ebind.NonRetryable``; passed in so this module needs no App import).

    Returns:
        ``AttemptError`` keeps its error; ``non_retryable`` / ``dont_retry`` matches are kind
        ``handler`` (or the exception's own ``kind``) and not retryable; ``TimeoutError`` is
        kind ``timeout``, retryable; other exceptions are kind ``handler``, retryable;
        a ``BaseException`` that is not an ``Exception`` (``SystemExit``, ``KeyboardInterrupt``
        raised by handler code) is kind ``panic``, not retryable.
    """
    if isinstance(exc, AttemptError):
        return exc.error
    message = error_message(exc)
    own_kind = getattr(exc, "kind", None)
    kind = own_kind if isinstance(own_kind, str) and own_kind else ErrorKind.HANDLER.value
    if (non_retryable and isinstance(exc, non_retryable)) or (
        dont_retry and isinstance(exc, dont_retry)
    ):
        return TaskError(kind=kind, message=message, retryable=False)
    if isinstance(exc, TimeoutError):
        return TaskError(kind=ErrorKind.TIMEOUT.value, message=message, retryable=True)
    if not isinstance(exc, Exception):
        return TaskError(kind=ErrorKind.PANIC.value, message=message, retryable=False)
    return TaskError(kind=ErrorKind.HANDLER.value, message=message, retryable=True)


def effective_policy(
    envelope_policy: RetryPolicy | None,
    handler_policy: RetryPolicy | None,
    worker_default: RetryPolicy,
) -> RetryPolicy:
    """Precedence: the envelope's policy, else the handler's ``retry=``, else the worker's."""
    if envelope_policy is not None:
        return envelope_policy
    if handler_policy is not None:
        return handler_policy
    return worker_default


def decide(
    error: TaskError | None,
    policy: RetryPolicy,
    attempt: int,
    *,
    horizon: TaskHorizon | None = None,
    now: datetime | None = None,
) -> Outcome:
    """What to do after attempt ``attempt`` (1-based) ended with ``error`` (None = success).

    With ``horizon`` and ``now``, a retry that would start at or after the task's horizon
    is not made (even with ``maximum_attempts=0``): the task is dead-lettered as ``expired``,
    because the server would delete the message by then without a record.
    """
    if error is None:
        return Ack()
    if not policy.should_retry(error, attempt):
        return DeadLetter(error=error)
    delay = policy.next_delay(attempt)
    if (
        horizon is not None
        and now is not None
        and now + timedelta(seconds=delay) >= horizon.expires_at
    ):
        return DeadLetter(error=horizon_error(horizon.ready_at, horizon.seconds, error))
    return Retry(delay=delay)


def crash_looped(policy: RetryPolicy, delivery: int) -> TaskError | None:
    """The ``worker_lost`` error when ``delivery`` exceeds the policy's attempt cap, else None.

    A failed attempt within the cap is nak'd or terminated by the worker that ran it, so a
    delivery beyond the cap means earlier attempts never reported back: their worker died
    (or stalled past ack_wait). Running the task again would risk an endless crash loop.
    """
    cap = policy.maximum_attempts
    if cap <= 0 or delivery <= cap:
        return None
    return TaskError(
        kind=ErrorKind.WORKER_LOST.value,
        message=(
            f"delivery {delivery} exceeds maximum_attempts={cap}: earlier attempts ended "
            "without an outcome (the worker died or stalled past ack_wait)"
        ),
        retryable=False,
    )
