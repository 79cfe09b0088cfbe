"""Pure scheduling math: countdown/eta -> a JetStream message-schedule publish.

A delayed task is published to ``TASKS_SCHEDULED.<task_id>`` on EBIND_TASKS with the
headers ``Nats-Schedule: @at <RFC 3339 UTC>`` and ``Nats-Schedule-Target: <task subject>``.
At that time the server (2.12+) copies the message to the target subject, where the worker
receives an ordinary task; the copy carries ``Nats-Scheduler`` (the schedule subject) and
``Nats-Schedule-Next: purge`` headers. The schedule lives in the stream, so it survives
server and worker restarts. It is bound by the stream's max age: an ETA further out than
that is rejected up front instead of expiring silently.

Absolute ``eta=`` values follow the producer's clock.
Periodic schedules (``@every``, cron) will add their parsing here.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from ebind.errors import InvalidArguments

__all__ = [
    "HEADER_SCHEDULE",
    "HEADER_SCHEDULE_TARGET",
    "MAX_SCHEDULE_AHEAD",
    "SCHEDULED_PREFIX",
    "resolve_at",
    "rfc3339",
    "schedule_headers",
    "scheduled_subject",
]

SCHEDULED_PREFIX = "TASKS_SCHEDULED"
HEADER_SCHEDULE = "Nats-Schedule"
HEADER_SCHEDULE_TARGET = "Nats-Schedule-Target"
# Used when no tasks retention is known; an App passes its own horizon instead.
MAX_SCHEDULE_AHEAD = timedelta(hours=23)
HEADER_TTL = "Nats-TTL"


def rfc3339(at: datetime) -> str:
    """``2026-01-02T03:04:05.123456Z`` for an aware datetime (converted to UTC)."""
    utc = at.astimezone(UTC)
    # The year always in four digits: strftime writes year 999 as "999", which the server
    # refuses as an invalid schedule.
    return f"{utc.year:04d}-" + utc.strftime("%m-%dT%H:%M:%S.%fZ")


def scheduled_subject(task_id: str) -> str:
    """The subject a delayed task's schedule message is stored under."""
    return f"{SCHEDULED_PREFIX}.{task_id}"


def schedule_headers(at: datetime, target_subject: str) -> dict[str, str]:
    """The message-schedule headers that make the server publish to ``target_subject`` at ``at``.

    ``Nats-TTL: never`` keeps a pending countdown from the stream's max_age, so it is never
    removed before it fires; the server strips it from the fired task, whose own horizon
    then starts.
    """
    return {
        HEADER_SCHEDULE: f"@at {rfc3339(at)}",
        HEADER_SCHEDULE_TARGET: target_subject,
        HEADER_TTL: "never",
    }


def resolve_at(
    countdown: float | timedelta | None,
    eta: datetime | None,
    now: datetime,
    max_ahead: timedelta = MAX_SCHEDULE_AHEAD,
) -> datetime | None:
    """When a task should run, from ``countdown`` (seconds) or ``eta``; None means now.

    Raises:
        InvalidArguments: both given, a negative or non-finite countdown, a naive ``eta``,
            or a time further ahead than ``max_ahead`` (the App's tasks horizon).
    """
    if countdown is not None and eta is not None:
        raise InvalidArguments("pass either countdown= or eta=, not both", parameter="countdown")
    if countdown is not None:
        seconds = countdown.total_seconds() if isinstance(countdown, timedelta) else countdown
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise InvalidArguments(
                f"countdown must be seconds (a number) or a timedelta, got {countdown!r}",
                parameter="countdown",
            )
        if not math.isfinite(seconds) or seconds < 0:
            raise InvalidArguments(
                f"countdown must be a finite number of seconds >= 0, got {countdown!r}",
                parameter="countdown",
            )
        if seconds > max_ahead.total_seconds():
            raise InvalidArguments(
                f"cannot schedule a task {seconds:g}s ahead: the limit is the tasks retention "
                f"horizon of {max_ahead} (Retention.tasks / EBIND_RETENTION_TASKS); raise it, "
                "or use a periodic schedule or a workflow",
                parameter="countdown",
            )
        at = now + timedelta(seconds=seconds)
    elif eta is not None:
        if not isinstance(eta, datetime):
            raise InvalidArguments(
                f"eta must be a datetime, got {type(eta).__name__}", parameter="eta"
            )
        if eta.tzinfo is None or eta.utcoffset() is None:
            raise InvalidArguments(
                f"eta {eta.isoformat()} has no time zone; pass an aware datetime, "
                "e.g. datetime.now(UTC) + timedelta(minutes=5)",
                parameter="eta",
            )
        at = eta
    else:
        return None
    if at - now > max_ahead:
        raise InvalidArguments(
            f"cannot schedule a task {at - now} ahead: the limit is the tasks retention "
            f"horizon of {max_ahead} (Retention.tasks / EBIND_RETENTION_TASKS); raise it, "
            "or use a periodic schedule or a workflow",
            parameter="eta" if eta is not None else "countdown",
        )
    return at
