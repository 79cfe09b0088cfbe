"""Handler and Middleware types, ``chain()``, and the built-in ``recover`` and ``log`` middlewares.

A middleware wraps a :data:`Handler`: ``mw(next) -> handler``. In ``chain(mws, base)`` the
first middleware is the outermost and :func:`recover_middleware` is always the innermost,
so every middleware sees a failure as :class:`~ebind.worker.outcome.AttemptError`
(the Go seed had it outermost, hiding panics from logging and metrics).

Whether a failed attempt is retried or dead-lettered is decided *after* the chain returns,
so a middleware that wants the final outcome registers a listener with
:func:`add_outcome_listener`; the worker calls it exactly once per attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

from ebind.context import Context
from ebind.errors import NonRetryable
from ebind.logging import get_logger
from ebind.wire import TaskEnvelope, TaskError
from ebind.worker.outcome import AttemptError, classify

__all__ = [
    "OUTCOME_LISTENERS",
    "Handler",
    "Middleware",
    "OutcomeListener",
    "PlainChain",
    "add_outcome_listener",
    "chain",
    "log_middleware",
    "notify_outcome",
    "plain_chain",
    "recover_middleware",
    "steps_only",
]

Handler = Callable[[Context, TaskEnvelope], Awaitable[bytes]]
"""Runs one attempt of a task and returns the JSON-encoded result."""

Middleware = Callable[[Handler], Handler]
"""Wraps a Handler in another Handler."""

OutcomeListener = Callable[[str, "TaskError | None"], None]
"""Called once per attempt with the outcome (``succeeded``, ``retrying``, ``dead_lettered``,
``failed`` or ``skipped``) and the attempt's error (None on success)."""

OUTCOME_LISTENERS = "ebind.outcome_listeners"
"""``Context.extras`` key holding the attempt's outcome listeners."""

LOG_CLAIMED = "ebind.log_claimed"
"""``Context.extras`` key set when a middleware writes the attempt's canonical log line."""

_NON_RETRYABLE: tuple[type[BaseException], ...] = (NonRetryable,)

log = get_logger("ebind.worker")

_LEVELS = {
    "succeeded": "info",
    "skipped": "info",
    "retrying": "warning",
    "dead_lettered": "error",
    "failed": "error",
}

_LEVEL_NUMBERS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


_PLAIN = "_ebind_plain_chain"
_STEPS_ONLY = "_ebind_steps_only"


class PlainChain(NamedTuple):
    """What a chain does for a task that is not a DAG step, when it only logs and recovers."""

    base: Handler
    """The innermost handler the chain was built around."""
    logs: bool
    """Whether the chain writes the attempt's log line (the log middleware is in it)."""


def steps_only(middleware: Middleware) -> Middleware:
    """Mark ``middleware`` as doing nothing for a task that is not a DAG step (returns it)."""
    setattr(middleware, _STEPS_ONLY, True)
    return middleware


def plain_chain(handler: Handler) -> PlainChain | None:
    """For a chain built by :func:`chain`: what it adds around its base for a plain task.

    None when it holds a middleware that may act on any task; the worker then runs every
    delivery through the chain.
    """
    got = getattr(handler, _PLAIN, None)
    return got if isinstance(got, PlainChain) else None


def add_outcome_listener(ctx: Context, listener: OutcomeListener) -> None:
    """Ask the worker to call ``listener(outcome, error)`` once this attempt's outcome is known."""
    listeners: list[OutcomeListener] = ctx.extras.setdefault(OUTCOME_LISTENERS, [])
    listeners.append(listener)


def notify_outcome(ctx: Context, outcome: str, error: TaskError | None) -> None:
    """Call every listener registered for this attempt; a failing listener is logged, not raised."""
    for listener in ctx.extras.get(OUTCOME_LISTENERS, ()):
        try:
            listener(outcome, error)
        except Exception:
            log.exception("worker.outcome_listener_failed", task_id=ctx.task_id)


def chain(middlewares: Sequence[Middleware], base: Handler) -> Handler:
    """Compose ``middlewares`` around ``base``: first = outermost, ``recover`` innermost."""
    outer = [mw for mw in middlewares if mw is not recover_middleware]
    logs = bool(outer) and outer[-1] is log_middleware
    if logs:
        # The CLI's default chain ends with log around recover: one frame does both, the
        # same steps in the same order, one coroutine fewer per attempt.
        outer.pop()
        handler = _log_and_recover(base)
    else:
        # recover is already innermost; a second copy would be a no-op
        handler = recover_middleware(base)
    for mw in reversed(outer):
        handler = mw(handler)
    if all(getattr(mw, _STEPS_ONLY, False) for mw in outer):
        # Only log and recover act on a task that is not a DAG step: the worker may run
        # such a task through its flat path, which does the same two steps inline.
        setattr(handler, _PLAIN, PlainChain(base, logs))
    return handler


def recover_middleware(next_handler: Handler) -> Handler:
    """Turn anything the handler raises into ``AttemptError`` (cancellation passes through)."""

    async def recovering(ctx: Context, env: TaskEnvelope) -> bytes:
        try:
            return await next_handler(ctx, env)
        except AttemptError:
            raise
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            raise AttemptError(classify(exc, non_retryable=_NON_RETRYABLE)) from exc

    return recovering


def log_middleware(next_handler: Handler) -> Handler:
    """Emit one structlog event per attempt, once its outcome is known.

    Events: ``task.succeeded`` / ``task.retrying`` / ``task.dead_lettered`` / ``task.failed``
    (and ``task.skipped`` for stale DAG deliveries) with task_id, task_name, attempt,
    duration_ms, worker_id and error_kind.
    """

    async def logged(ctx: Context, env: TaskEnvelope) -> bytes:
        _log_outcome(ctx)
        return await next_handler(ctx, env)

    return logged


def _log_outcome(ctx: Context) -> None:
    """Claim the attempt's log line and emit it, with its duration, once the outcome is known."""
    ctx.extras[LOG_CLAIMED] = True
    add_outcome_listener(ctx, attempt_line_listener(ctx, time.perf_counter()))


def attempt_line_listener(ctx: Context, start: float) -> OutcomeListener:
    """The listener that writes the attempt's line, timed from ``start`` (``perf_counter``)."""

    def emit(outcome: str, error: TaskError | None) -> None:
        emit_attempt_line(ctx, outcome, error, (time.perf_counter() - start) * 1000.0)

    return emit


def _log_and_recover(base: Handler) -> Handler:
    """``log_middleware(recover_middleware(base))`` in one coroutine."""

    async def logged_recovering(ctx: Context, env: TaskEnvelope) -> bytes:
        _log_outcome(ctx)
        try:
            return await base(ctx, env)
        except AttemptError:
            raise
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            raise AttemptError(classify(exc, non_retryable=_NON_RETRYABLE)) from exc

    return logged_recovering


def _enabled(level: str) -> bool:
    # Asked per line (the configuration may change at run time), and cheaper than building
    # the fields of a line the filtering logger would drop: at --log-level warning every
    # success line used to cost a dict, a rounding and a structlog call for nothing.
    return bool(log.is_enabled_for(_LEVEL_NUMBERS[level]))


def emit_attempt_line(
    ctx: Context, outcome: str, error: TaskError | None, duration_ms: float | None
) -> None:
    """Write the canonical ``task.<outcome>`` line for one attempt."""
    level = _LEVELS.get(outcome, "info")
    if not _enabled(level):
        return
    fields: dict[str, Any] = {
        "task_id": ctx.task_id,
        "task_name": ctx.name,
        "attempt": ctx.attempt,
        "duration_ms": None if duration_ms is None else round(duration_ms, 3),
        "worker_id": ctx.worker_id,
        "error_kind": error.kind if error is not None else None,
    }
    if ctx.dag_id:
        fields["dag_id"] = ctx.dag_id
        fields["step_id"] = ctx.step_id
    if error is not None:
        fields["error"] = error.message[:2000]
    getattr(log, level)(f"task.{outcome}", **fields)
