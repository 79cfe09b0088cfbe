"""countdown/eta resolution and the message-schedule headers (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ebind.errors import InvalidArguments
from ebind.schedule import (
    MAX_SCHEDULE_AHEAD,
    resolve_at,
    rfc3339,
    schedule_headers,
    scheduled_subject,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def test_no_schedule_means_now() -> None:
    assert resolve_at(None, None, NOW) is None


def test_countdown_seconds_and_timedelta() -> None:
    assert resolve_at(1.5, None, NOW) == NOW + timedelta(seconds=1.5)
    assert resolve_at(timedelta(minutes=2), None, NOW) == NOW + timedelta(minutes=2)
    assert resolve_at(0, None, NOW) == NOW


def test_eta_in_another_zone_is_kept_and_rendered_in_utc() -> None:
    eta = datetime(2026, 1, 2, 5, 0, tzinfo=timezone(timedelta(hours=2)))
    at = resolve_at(None, eta, NOW)
    assert at == eta
    assert rfc3339(eta) == "2026-01-02T03:00:00.000000Z"


def test_past_eta_is_allowed_and_runs_at_once() -> None:
    assert resolve_at(None, NOW - timedelta(hours=1), NOW) == NOW - timedelta(hours=1)


@pytest.mark.parametrize(
    ("countdown", "eta", "match"),
    [
        (1, NOW, "either countdown= or eta="),
        (-1, None, "finite number of seconds >= 0"),
        (float("nan"), None, "finite number"),
        ("5", None, "countdown must be seconds"),
        (None, datetime(2026, 1, 1), "has no time zone"),
        (None, "tomorrow", "eta must be a datetime"),
        (86400, None, "the limit is the tasks retention horizon of 23:00:00"),
        (None, NOW + MAX_SCHEDULE_AHEAD + timedelta(seconds=1), "Retention.tasks"),
    ],
)
def test_bad_schedules_are_rejected(countdown: object, eta: object, match: str) -> None:
    with pytest.raises(InvalidArguments, match=match):
        resolve_at(countdown, eta, NOW)  # type: ignore[arg-type]


def test_the_limit_is_the_horizon_given() -> None:
    week = timedelta(days=7)
    assert resolve_at(6 * 86400, None, NOW, week) == NOW + timedelta(days=6)
    with pytest.raises(InvalidArguments, match="horizon of 7 days"):
        resolve_at(8 * 86400, None, NOW, week)


def test_headers_and_subject() -> None:
    assert schedule_headers(NOW, "TASKS.a.b") == {
        "Nats-Schedule": "@at 2026-01-02T03:04:05.123456Z",
        "Nats-Schedule-Target": "TASKS.a.b",
        "Nats-TTL": "never",
    }
    assert scheduled_subject("t-1") == "TASKS_SCHEDULED.t-1"
