"""Which ack_wait a shared durable keeps and how often a worker keeps its messages alive."""

from __future__ import annotations

import pytest

from ebind.worker.ackwait import (
    KEEPALIVES_PER_ACK_WAIT,
    differs,
    durable_ack_wait,
    keepalive_interval,
)


def test_new_durable_gets_the_workers_ack_wait() -> None:
    assert durable_ack_wait(None, 6.0) == 6.0


@pytest.mark.parametrize(("existing", "wanted"), [(6.0, 1.0), (1.0, 6.0), (30.0, 30.0)])
def test_existing_durable_keeps_its_ack_wait(existing: float, wanted: float) -> None:
    assert durable_ack_wait(existing, wanted) == existing


def test_unknown_existing_value_counts_as_new() -> None:
    assert durable_ack_wait(0.0, 2.5) == 2.5


@pytest.mark.parametrize("wanted", [0.0, -1.0])
def test_non_positive_ack_wait_is_refused(wanted: float) -> None:
    with pytest.raises(ValueError, match="ack_wait must be > 0"):
        durable_ack_wait(None, wanted)
    with pytest.raises(ValueError, match="ack_wait must be > 0"):
        keepalive_interval(wanted, [])


def test_keepalive_follows_the_workers_own_value_alone() -> None:
    assert keepalive_interval(6.0, []) == pytest.approx(6.0 / KEEPALIVES_PER_ACK_WAIT)


def test_keepalive_follows_a_shorter_durable() -> None:
    assert keepalive_interval(6.0, [1.0, 30.0]) == pytest.approx(1.0 / 3)


def test_keepalive_follows_a_shorter_own_value() -> None:
    assert keepalive_interval(1.0, [6.0]) == pytest.approx(1.0 / 3)


def test_keepalive_ignores_unknown_durable_values() -> None:
    assert keepalive_interval(3.0, [0.0, -2.0]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("own", "actual", "expected"),
    [(6.0, 6.0, False), (6.0, 6.0004, False), (6.0, 1.0, True), (1.0, 6.0, True)],
)
def test_differs_tolerates_nanosecond_rounding(own: float, actual: float, expected: bool) -> None:
    assert differs(own, actual) is expected
