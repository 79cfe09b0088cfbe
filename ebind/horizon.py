"""Pure arithmetic of the task horizon: stream limits from a Retention, and what has expired.

A queued task may wait ``Retention.tasks`` seconds. The server's own ``max_age`` on
EBIND_TASKS is that horizon plus a grace margin, so ebind (the worker's check and the
expirer) dead-letters a task as ``expired`` *before* the server would delete it silently.
When an operator set a lower ``max_age`` on the server, the horizon shrinks to fit under it.
Nothing here does IO.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from ebind.wire import ErrorKind, TaskError

__all__ = [
    "EXPIRER_MAX_INTERVAL",
    "TaskHorizon",
    "effective_horizon",
    "expirer_interval",
    "grace",
    "horizon_error",
    "horizon_error_message",
    "is_expired",
    "tasks_max_age",
]

_MIN_GRACE = 2.0
_MAX_GRACE = 3600.0
EXPIRER_MAX_INTERVAL = 60.0
"""Longest pause between two expirer passes, whatever the horizon."""
_MIN_INTERVAL = 0.5
_LAST_ERROR_CHARS = 2000


class TaskHorizon(NamedTuple):
    """When one task became ready to run and how long it may wait from then (seconds)."""

    ready_at: datetime
    seconds: float

    @property
    def expires_at(self) -> datetime:
        """The moment the task expires."""
        return self.ready_at + timedelta(seconds=self.seconds)


def grace(horizon: float) -> float:
    """Margin between ebind's horizon and the server's max_age: a quarter, 2 s to 1 h."""
    return min(max(horizon / 4, _MIN_GRACE), _MAX_GRACE)


def tasks_max_age(horizon: float) -> float:
    """``max_age`` ebind creates EBIND_TASKS (and EBIND_DAG_EVENTS) with."""
    return horizon + grace(horizon)


def effective_horizon(configured: float, server_max_age: float | None) -> float:
    """The horizon to enforce: the configured one, shrunk to expire before the server deletes.

    ``server_max_age`` is EBIND_TASKS' ``max_age`` as the server reports it (None or 0 when
    unlimited). A server limit below ``configured + grace`` (an operator's choice, or a
    stream made by an older ebind) wins: the task is dead-lettered a margin before it.
    """
    if not server_max_age or server_max_age <= 0:
        return configured
    return min(configured, max(_horizon_for(server_max_age), server_max_age / 2))


def _horizon_for(max_age: float) -> float:
    """The inverse of :func:`tasks_max_age`: the horizon whose max_age is ``max_age``."""
    if max_age < 4 * _MIN_GRACE + _MIN_GRACE:
        return max_age - _MIN_GRACE
    if max_age <= 5 * _MAX_GRACE:
        return max_age / 1.25
    return max_age - _MAX_GRACE


def expirer_interval(horizon: float) -> float:
    """Seconds between expirer passes: a tenth of the horizon, 0.5 s to 60 s."""
    return min(max(horizon / 10, _MIN_INTERVAL), EXPIRER_MAX_INTERVAL)


def is_expired(ready_at: datetime | None, horizon: float, now: datetime) -> bool:
    """Whether a task queued (or made due) at ``ready_at`` is past ``horizon`` at ``now``.

    A task with no known time never expires here (the server's max_age still bounds it).
    """
    if ready_at is None:
        return False
    return now >= ready_at + timedelta(seconds=horizon)


def horizon_error_message(ready_at: datetime, horizon: float, last: TaskError | None = None) -> str:
    """The text of an ``expired`` error: when the task was queued, the horizon, the last error."""
    why = (
        "it could not run before its retention horizon"
        if last is None
        else "its next retry would start after its retention horizon"
    )
    text = (
        f"task queued at {ready_at.isoformat()} expired: {why} of {horizon:g}s "
        "(raise Retention.tasks / EBIND_RETENTION_TASKS to keep tasks longer)"
    )
    if last is not None:
        text += f"; the last attempt failed with {last.kind}: {last.message[:_LAST_ERROR_CHARS]}"
    return text


def horizon_error(ready_at: datetime, horizon: float, last: TaskError | None = None) -> TaskError:
    """The non-retryable ``TaskError`` of kind ``expired`` (``last``: the error of a retry)."""
    return TaskError(
        kind=ErrorKind.EXPIRED.value,
        message=horizon_error_message(ready_at, horizon, last),
        retryable=False,
    )
