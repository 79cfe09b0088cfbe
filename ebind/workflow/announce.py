"""What a worker's liveness record lists: pure rules, so the record stays small and current.

A step is announced while its delivery runs. When the delivery ends without an outcome
(nak'd for a retry, a failed hook, a response that could not be stored, shutdown) the step
is *released*: it stays announced only until its redelivery is due plus a grace, since the
record still names this worker until the redelivery starts, and then it goes. So a worker
announces its running steps plus a few about to be redelivered, never a growing history,
and the list is capped anyway (in entries and in bytes) so a beat always fits a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "ANNOUNCE_MARGIN",
    "DEFAULT_ANNOUNCE_LIMIT",
    "MAX_ANNOUNCED_BYTES",
    "Announced",
    "Token",
    "announce_limit",
    "announced_steps",
    "expired_keys",
    "release_until",
]

Token = tuple[int, int | None]
"""The delivery that announced a step: (attempt, dispatch generation)."""

ANNOUNCE_MARGIN = 16
"""Entries allowed past a worker's concurrency: steps released and awaiting redelivery."""
DEFAULT_ANNOUNCE_LIMIT = 1024
"""Entries per record when the worker's concurrency is not known."""
MAX_ANNOUNCED_BYTES = 64 * 1024
"""Bytes of step keys per record, far below any server's max_payload."""
_ENTRY_OVERHEAD = 3
"""JSON framing per listed key: two quotes and a comma."""


@dataclass(slots=True)
class Announced:
    """One announced step: the delivery that owns it, when it started, when it stops."""

    token: Token | None
    since: float
    until: float | None = None
    """Monotonic time after which a released step is no longer announced (None: running)."""


def announce_limit(concurrency: int | None) -> int:
    """Most entries a worker with ``concurrency`` slots announces."""
    if concurrency is None:
        return DEFAULT_ANNOUNCE_LIMIT
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    return concurrency + ANNOUNCE_MARGIN


def release_until(current: float | None, now: float, redeliver_in: float, grace: float) -> float:
    """When a released step stops being announced; a second release never shortens it."""
    until = now + max(redeliver_in, 0.0) + max(grace, 0.0)
    return until if current is None else max(current, until)


def expired_keys(entries: Mapping[str, Announced], now: float) -> list[str]:
    """Released steps whose redelivery time and grace have passed (to forget)."""
    return [k for k, e in entries.items() if e.until is not None and e.until <= now]


def announced_steps(
    entries: Mapping[str, Announced],
    now: float,
    limit: int,
    max_bytes: int = MAX_ANNOUNCED_BYTES,
) -> tuple[list[str], int]:
    """The keys to list in a beat and how many were left out by the caps.

    Expired releases are never listed. Running steps come before released ones, the most
    recent first within each: if anything must go, it is an old released step, whose
    redelivery the sweep can judge from the record alone.
    """
    live = [(k, e) for k, e in entries.items() if e.until is None or e.until > now]
    live.sort(key=lambda ke: (ke[1].until is not None, -ke[1].since))
    out: list[str] = []
    used = 0
    for key, _ in live:
        cost = len(key.encode()) + _ENTRY_OVERHEAD
        if len(out) >= limit or used + cost > max_bytes:
            break
        out.append(key)
        used += cost
    return out, len(live) - len(out)
