"""The task horizon's arithmetic: grace, stream max ages, the effective horizon, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ebind.horizon import (
    EXPIRER_MAX_INTERVAL,
    TaskHorizon,
    effective_horizon,
    expirer_interval,
    grace,
    horizon_error,
    is_expired,
    tasks_max_age,
)
from ebind.wire import TaskError

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("horizon", "margin"),
    [(1.0, 2.0), (8.0, 2.0), (40.0, 10.0), (7 * 86400.0, 3600.0), (4 * 3600.0, 3600.0)],
)
def test_grace_is_a_quarter_between_two_seconds_and_an_hour(horizon: float, margin: float) -> None:
    assert grace(horizon) == margin
    assert tasks_max_age(horizon) == horizon + margin


@pytest.mark.parametrize("server", [None, 0.0, -1.0])
def test_an_unlimited_server_keeps_the_configured_horizon(server: float | None) -> None:
    assert effective_horizon(100.0, server) == 100.0


def test_a_server_limit_above_ours_changes_nothing() -> None:
    assert effective_horizon(100.0, tasks_max_age(100.0)) == 100.0
    assert effective_horizon(100.0, 30 * 86400.0) == 100.0


def test_a_lower_server_limit_shrinks_the_horizon_below_it() -> None:
    # an older stream with 24 h while the App wants a week: expire an hour before the server
    assert effective_horizon(7 * 86400.0, 86400.0) == 86400.0 - 3600.0
    # a tiny limit keeps at least half of it
    assert effective_horizon(100.0, 3.0) == 1.5
    assert effective_horizon(100.0, 20.0) == 16.0
    assert effective_horizon(100.0, 9.0) == 7.0


@pytest.mark.parametrize("horizon", [1.0, 5.0, 8.0, 9.5, 100.0, 14400.0, 20000.0, 7 * 86400.0])
def test_our_own_max_age_gives_back_the_configured_horizon(horizon: float) -> None:
    assert effective_horizon(horizon, tasks_max_age(horizon)) == pytest.approx(horizon)


@pytest.mark.parametrize(
    ("horizon", "interval"), [(1.0, 0.5), (30.0, 3.0), (7 * 86400.0, EXPIRER_MAX_INTERVAL)]
)
def test_expirer_interval_is_a_tenth_of_the_horizon_bounded(
    horizon: float, interval: float
) -> None:
    assert expirer_interval(horizon) == interval


def test_is_expired_at_and_after_the_horizon_only() -> None:
    assert not is_expired(T0, 10.0, T0 + timedelta(seconds=9.999))
    assert is_expired(T0, 10.0, T0 + timedelta(seconds=10))
    assert is_expired(T0, 10.0, T0 + timedelta(days=1))
    assert not is_expired(None, 10.0, T0 + timedelta(days=365))


def test_task_horizon_expires_at() -> None:
    assert TaskHorizon(T0, 90.0).expires_at == T0 + timedelta(seconds=90)


def test_horizon_error_says_when_why_and_how_to_change_it() -> None:
    err = horizon_error(T0, 60.0)
    assert err.kind == "expired" and not err.retryable
    assert "2026-01-01T00:00:00+00:00" in err.message
    assert "could not run before its retention horizon of 60s" in err.message
    assert "EBIND_RETENTION_TASKS" in err.message
    last = TaskError(kind="timeout", message="x" * 10_000, retryable=True)
    retried = horizon_error(T0, 60.0, last)
    assert "next retry would start after" in retried.message
    assert "the last attempt failed with timeout: " in retried.message
    assert len(retried.message) < 2500  # the last error is cut, the record stays small
