"""How many deliveries a worker holds beyond the handlers it runs (pure).

A worker that asks for a message only when a slot frees leaves that slot idle for a pull
round trip, which for short tasks is longer than the task. Holding a few deliveries ahead
hides the round trip; holding too many starves the other workers of the same queue (a
message held here waits while a neighbour idles). The worker therefore holds ahead only
what its slots will start within :data:`HORIZON` at the pace they have been freeing, and
never more than ``prefetch - 1`` times its concurrency: short tasks get a deep queue, tasks
of a tenth of a second or longer get none.
"""

from __future__ import annotations

__all__ = ["DEFAULT_PREFETCH", "HORIZON", "SlotPace", "check_prefetch", "held_ahead"]

DEFAULT_PREFETCH = 4
"""At most this many deliveries per slot are held (running, waiting or being answered)."""

HORIZON = 0.010
"""Seconds a delivery held ahead is expected to wait for its slot, at the measured pace."""

_WEIGHT = 0.1  # of the newest slot time in the moving average


def check_prefetch(prefetch: object) -> int:
    """``prefetch`` if it is a whole number of at least 1; ValueError naming it otherwise."""
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
        raise ValueError(f"prefetch must be a whole number >= 1, got {prefetch!r}")
    return prefetch


def held_ahead(slots: int, slot_seconds: float | None, prefetch: int) -> int:
    """Deliveries to hold beyond ``slots`` running ones.

    ``slot_seconds`` is how long a delivery keeps its slot on average (None: not measured
    yet, so nothing is held ahead). The answer is what the slots start within
    :data:`HORIZON`, between 0 and ``(prefetch - 1) * slots``.
    """
    if prefetch <= 1 or slot_seconds is None:
        return 0
    cap = (prefetch - 1) * slots
    if slot_seconds <= 0:
        return cap
    return min(cap, int(slots * HORIZON / slot_seconds))


class SlotPace:
    """Moving average of how long a delivery keeps its execution slot."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds: float | None = None
        """The average so far (None until the first slot is given back)."""

    def record(self, seconds: float) -> float:
        """Add one slot's time; returns the new average."""
        seconds = max(0.0, seconds)
        avg = self.seconds
        avg = seconds if avg is None else avg + _WEIGHT * (seconds - avg)
        self.seconds = avg
        return avg
