"""RetryPolicy: pure backoff math and the retry decision."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from ebind.wire import TaskError

__all__ = ["DEFAULT_RETRY_POLICY", "RetryPolicy"]


class RetryPolicy(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """How often and how far apart a failing task is retried (intervals in seconds).

    ``maximum_attempts=0`` means unlimited. On the wire the intervals are float seconds
    (the Go seed used integer nanoseconds; ebind documents seconds in docs/decisions.md).
    """

    initial_interval: float = 1.0
    backoff_coefficient: float = 2.0
    maximum_interval: float = 60.0
    maximum_attempts: int = 5
    non_retryable_error_kinds: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def none(cls) -> RetryPolicy:
        """One attempt, never retried."""
        return cls(
            initial_interval=0.0, backoff_coefficient=1.0, maximum_interval=0.0, maximum_attempts=1
        )

    def next_delay(self, attempt: int) -> float:
        """Seconds to wait after attempt number ``attempt`` (1-based) failed; no jitter."""
        if attempt <= 0 or self.initial_interval <= 0:
            return 0.0
        coeff = self.backoff_coefficient if self.backoff_coefficient > 0 else 1.0
        try:
            raw = self.initial_interval * coeff ** (attempt - 1)
        except OverflowError:
            raw = math.inf
        if self.maximum_interval > 0 and raw > self.maximum_interval:
            return self.maximum_interval
        return raw

    def should_retry(self, err: TaskError | None, attempt: int) -> bool:
        """Whether a failure at ``attempt`` may run again (cap, retryable flag, kinds)."""
        if err is None:
            return False
        if self.maximum_attempts > 0 and attempt >= self.maximum_attempts:
            return False
        if not err.retryable:
            return False
        return err.kind not in self.non_retryable_error_kinds


def _validate(p: RetryPolicy) -> None:
    from ebind.errors import InvalidArguments

    checks = (
        (p.initial_interval < 0, f"initial_interval must be >= 0, got {p.initial_interval}"),
        (p.maximum_interval < 0, f"maximum_interval must be >= 0, got {p.maximum_interval}"),
        (
            p.maximum_attempts < 0,
            f"maximum_attempts must be >= 0 (0 = unlimited), got {p.maximum_attempts}",
        ),
        (
            p.backoff_coefficient < 1 and p.maximum_attempts != 1,
            f"backoff_coefficient must be >= 1, got {p.backoff_coefficient}",
        ),
        (
            any(
                not math.isfinite(v)
                for v in (p.initial_interval, p.maximum_interval, p.backoff_coefficient)
            ),
            "retry intervals and coefficient must be finite numbers",
        ),
    )
    for bad, message in checks:
        if bad:
            raise InvalidArguments(f"invalid RetryPolicy: {message}")


DEFAULT_RETRY_POLICY = RetryPolicy()
