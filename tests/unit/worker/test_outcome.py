"""Pure worker decisions: error classification, retry/dead-letter choice, policy precedence."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from ebind.horizon import TaskHorizon
from ebind.retry import RetryPolicy
from ebind.wire import ErrorKind, TaskError
from ebind.worker.outcome import (
    MAX_ERROR_MESSAGE,
    Ack,
    AttemptError,
    DeadLetter,
    Retry,
    classify,
    crash_looped,
    decide,
    effective_policy,
)


class BoomError(Exception):
    pass


class CustomKindError(Exception):
    kind = "payment_declined"


def test_classify_plain_exception_is_retryable_handler_error() -> None:
    err = classify(RuntimeError("disk on fire"))
    assert err == TaskError(kind="handler", message="RuntimeError: disk on fire", retryable=True)


def test_classify_dont_retry_type_is_not_retryable() -> None:
    err = classify(ValueError("bad"), dont_retry=(ValueError,))
    assert err.kind == "handler"
    assert err.retryable is False


def test_classify_dont_retry_matches_subclasses() -> None:
    assert classify(BoomError("x"), dont_retry=(Exception,)).retryable is False


def test_classify_non_retryable_type_keeps_its_own_kind() -> None:
    err = classify(CustomKindError("no funds"), non_retryable=(CustomKindError,))
    assert (err.kind, err.retryable) == ("payment_declined", False)


def test_classify_timeout_is_retryable_timeout_kind() -> None:
    err = classify(TimeoutError())
    assert (err.kind, err.retryable, err.message) == ("timeout", True, "TimeoutError")


def test_classify_base_exception_is_panic() -> None:
    err = classify(SystemExit(3))
    assert (err.kind, err.retryable) == ("panic", False)


def test_classify_attempt_error_passes_its_error_through() -> None:
    inner = TaskError(kind="arg_type", message="x", retryable=False)
    assert classify(AttemptError(inner)) is inner


def test_classify_truncates_huge_messages() -> None:
    err = classify(RuntimeError("x" * (MAX_ERROR_MESSAGE * 2)))
    assert len(err.message) < MAX_ERROR_MESSAGE + 100
    assert err.message.endswith("[truncated]")


def test_classify_survives_a_broken_str() -> None:
    class BrokenError(Exception):
        def __str__(self) -> str:
            raise RuntimeError("nope")

    assert classify(BrokenError()).message == "BrokenError"


def test_decide_success_acks() -> None:
    assert decide(None, RetryPolicy(), 1) == Ack()


def test_decide_retryable_within_cap_retries_with_policy_delay() -> None:
    policy = RetryPolicy(initial_interval=0.5, backoff_coefficient=3.0, maximum_attempts=4)
    err = TaskError(kind="handler", message="x", retryable=True)
    assert decide(err, policy, 1) == Retry(delay=0.5)
    assert decide(err, policy, 2) == Retry(delay=1.5)
    assert decide(err, policy, 3) == Retry(delay=4.5)
    assert decide(err, policy, 4) == DeadLetter(error=err)


def test_decide_non_retryable_dead_letters_at_first_attempt() -> None:
    err = TaskError(kind="arg_count", message="x", retryable=False)
    assert decide(err, RetryPolicy(), 1) == DeadLetter(error=err)


def test_decide_non_retryable_kind_in_policy_dead_letters() -> None:
    policy = RetryPolicy(non_retryable_error_kinds=("timeout",))
    err = TaskError(kind="timeout", message="x", retryable=True)
    assert isinstance(decide(err, policy, 1), DeadLetter)


def test_decide_unlimited_attempts_keeps_retrying() -> None:
    policy = RetryPolicy(maximum_attempts=0, maximum_interval=10.0)
    err = TaskError(kind="handler", message="x", retryable=True)
    assert decide(err, policy, 1000) == Retry(delay=10.0)


@pytest.mark.parametrize("seed", range(20), ids=lambda s: f"seed={s}")
def test_decide_deliveries_equal_maximum_attempts(seed: int) -> None:
    """In miniature: an always-failing task runs exactly maximum_attempts times."""
    rng = random.Random(seed)
    cap = rng.randint(1, 12)
    policy = RetryPolicy(
        initial_interval=rng.uniform(0, 2),
        backoff_coefficient=rng.uniform(1, 3),
        maximum_attempts=cap,
    )
    err = TaskError(kind="handler", message="x", retryable=True)
    attempt = 1
    delays = []
    while isinstance(out := decide(err, policy, attempt), Retry):
        delays.append(out.delay)
        attempt += 1
    assert attempt == cap
    assert delays == sorted(delays)  # backoff never shrinks


def test_effective_policy_precedence() -> None:
    env, handler, worker = (
        RetryPolicy(maximum_attempts=2),
        RetryPolicy(maximum_attempts=3),
        RetryPolicy(),
    )
    assert effective_policy(env, handler, worker) is env
    assert effective_policy(None, handler, worker) is handler
    assert effective_policy(None, None, worker) is worker


def test_crash_looped_only_past_the_cap() -> None:
    policy = RetryPolicy(maximum_attempts=3)
    assert crash_looped(policy, 3) is None
    err = crash_looped(policy, 4)
    assert err is not None
    assert (err.kind, err.retryable) == ("worker_lost", False)
    assert "maximum_attempts=3" in err.message


def test_crash_looped_never_with_unlimited_attempts() -> None:
    assert crash_looped(RetryPolicy(maximum_attempts=0), 10_000) is None


# ------------------------------------------------------------------ the task horizon
_T0 = datetime(2026, 1, 1, tzinfo=UTC)
_BOOM = TaskError(kind="handler", message="boom", retryable=True)


def test_decide_unlimited_retries_stop_when_the_next_one_starts_past_the_horizon() -> None:
    policy = RetryPolicy(initial_interval=10, backoff_coefficient=1, maximum_attempts=0)
    horizon = TaskHorizon(_T0, 100.0)
    early = decide(_BOOM, policy, 3, horizon=horizon, now=_T0 + timedelta(seconds=89))
    assert early == Retry(delay=10)
    late = decide(_BOOM, policy, 9, horizon=horizon, now=_T0 + timedelta(seconds=90))
    assert isinstance(late, DeadLetter)
    assert late.error.kind == ErrorKind.EXPIRED.value and not late.error.retryable
    assert "next retry would start after its retention horizon of 100s" in late.error.message
    assert "last attempt failed with handler: boom" in late.error.message


def test_decide_bounded_retries_are_cut_by_the_horizon_too() -> None:
    policy = RetryPolicy(initial_interval=30, backoff_coefficient=1, maximum_attempts=5)
    got = decide(_BOOM, policy, 1, horizon=TaskHorizon(_T0, 20.0), now=_T0)
    assert isinstance(got, DeadLetter) and got.error.kind == "expired"


def test_decide_horizon_leaves_success_and_final_failures_alone() -> None:
    horizon = TaskHorizon(_T0, 1.0)
    late = _T0 + timedelta(days=1)
    assert decide(None, RetryPolicy(), 1, horizon=horizon, now=late) == Ack()
    final = TaskError(kind="handler", message="no", retryable=False)
    assert decide(final, RetryPolicy(), 1, horizon=horizon, now=late) == DeadLetter(error=final)


def test_decide_needs_both_horizon_and_now_to_apply_it() -> None:
    policy = RetryPolicy(maximum_attempts=0)
    late = _T0 + timedelta(days=1)
    horizon = TaskHorizon(_T0, 1.0)
    assert isinstance(decide(_BOOM, policy, 1, horizon=horizon), Retry)
    assert isinstance(decide(_BOOM, policy, 1, now=late), Retry)
