"""RetryPolicy: next_delay / should_retry with Go ebind's rules and examples."""

from __future__ import annotations

import math

import pytest

from ebind.errors import InvalidArguments
from ebind.retry import DEFAULT_RETRY_POLICY, RetryPolicy
from ebind.wire import TaskError

RETRYABLE = TaskError(kind="handler", message="boom", retryable=True)
FATAL = TaskError(kind="handler", message="boom", retryable=False)


def test_default_policy_matches_the_seed() -> None:
    p = DEFAULT_RETRY_POLICY
    assert (p.initial_interval, p.backoff_coefficient, p.maximum_interval, p.maximum_attempts) == (
        1.0,
        2.0,
        60.0,
        5,
    )


@pytest.mark.parametrize(
    ("attempt", "expected"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0)]
)
def test_next_delay_doubles_from_initial(attempt: int, expected: float) -> None:
    assert (
        RetryPolicy(initial_interval=1.0, backoff_coefficient=2.0).next_delay(attempt) == expected
    )


@pytest.mark.parametrize(("attempt", "expected"), [(1, 1.0), (2, 3.0), (3, 3.0), (10, 3.0)])
def test_next_delay_is_capped_by_maximum_interval(attempt: int, expected: float) -> None:
    p = RetryPolicy(initial_interval=1.0, backoff_coefficient=10.0, maximum_interval=3.0)
    assert p.next_delay(attempt) == expected


def test_next_delay_overflow_returns_the_cap() -> None:
    p = RetryPolicy(initial_interval=3600.0, backoff_coefficient=1e10, maximum_interval=86400.0)
    assert p.next_delay(1000) == 86400.0


def test_next_delay_overflow_without_cap_is_infinite() -> None:
    p = RetryPolicy(initial_interval=1.0, backoff_coefficient=1e10, maximum_interval=0.0)
    assert math.isinf(p.next_delay(1000))


@pytest.mark.parametrize("attempt", [0, -1, -100])
def test_next_delay_is_zero_for_non_positive_attempts(attempt: int) -> None:
    assert RetryPolicy().next_delay(attempt) == 0.0


def test_next_delay_is_zero_when_initial_is_zero() -> None:
    assert RetryPolicy(initial_interval=0.0).next_delay(3) == 0.0


def test_coefficient_one_keeps_the_initial_interval_constant() -> None:
    p = RetryPolicy(initial_interval=2.5, backoff_coefficient=1.0)
    assert [p.next_delay(n) for n in range(1, 5)] == [2.5, 2.5, 2.5, 2.5]


def test_none_policy_never_retries_and_has_no_delay() -> None:
    p = RetryPolicy.none()
    assert p.maximum_attempts == 1
    assert not p.should_retry(RETRYABLE, 1)
    assert p.next_delay(1) == 0.0


@pytest.mark.parametrize(
    ("attempt", "expected"), [(0, True), (1, True), (4, True), (5, False), (6, False)]
)
def test_should_retry_respects_the_attempt_cap(attempt: int, expected: bool) -> None:
    assert RetryPolicy(maximum_attempts=5).should_retry(RETRYABLE, attempt) is expected


def test_should_retry_false_without_an_error() -> None:
    assert not RetryPolicy().should_retry(None, 1)


def test_should_retry_false_for_non_retryable_errors() -> None:
    assert not RetryPolicy().should_retry(FATAL, 1)


def test_should_retry_false_for_listed_kinds() -> None:
    p = RetryPolicy(non_retryable_error_kinds=("quota",))
    assert not p.should_retry(TaskError(kind="quota", message="", retryable=True), 1)
    assert p.should_retry(TaskError(kind="other", message="", retryable=True), 1)


def test_unlimited_attempts_still_check_flag_and_kinds() -> None:
    p = RetryPolicy(maximum_attempts=0, non_retryable_error_kinds=("quota",))
    assert p.should_retry(RETRYABLE, 10_000)
    assert not p.should_retry(FATAL, 1)
    assert not p.should_retry(TaskError(kind="quota", message="", retryable=True), 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"initial_interval": -1.0}, "initial_interval must be >= 0"),
        ({"maximum_interval": -0.5}, "maximum_interval must be >= 0"),
        ({"maximum_attempts": -1}, "maximum_attempts must be >= 0"),
        ({"backoff_coefficient": 0.5}, "backoff_coefficient must be >= 1"),
        ({"initial_interval": math.inf}, "finite"),
        ({"backoff_coefficient": math.nan}, "finite"),
    ],
)
def test_invalid_policies_are_rejected_at_definition(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(InvalidArguments, match=match):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
