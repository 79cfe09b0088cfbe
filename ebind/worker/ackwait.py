"""Per-worker ack_wait on shared durables: which value a durable keeps, how often to keep alive.

Workers started with different ``ack_wait`` share the lane and claim durables.
Had each worker written its own value into the durable, the last one to start would set it
for all, and a long task on a worker counting on a longer ack_wait would be redelivered
while it runs. So a durable keeps the ack_wait it was created with, and every worker sends
in-progress acks often enough for the shortest ack_wait that applies to it: its own or the
durable's, whichever is smaller.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["KEEPALIVES_PER_ACK_WAIT", "differs", "durable_ack_wait", "keepalive_interval"]

KEEPALIVES_PER_ACK_WAIT = 3
"""In-progress acks sent per ack_wait: two may be lost or late before a redelivery."""
_TOLERANCE = 0.001
"""The server stores ack_wait in nanoseconds; values this close count as the same."""


def durable_ack_wait(existing: float | None, wanted: float) -> float:
    """The ack_wait to configure on a durable: the one it has, else ``wanted`` (a new one)."""
    if wanted <= 0:
        raise ValueError(f"ack_wait must be > 0 seconds, got {wanted}")
    if existing is None or existing <= 0:
        return wanted
    return existing


def differs(own: float, actual: float) -> bool:
    """Whether a durable's ``actual`` ack_wait is not the worker's ``own`` (worth a log line)."""
    return abs(own - actual) > _TOLERANCE


def keepalive_interval(own: float, durables: Iterable[float]) -> float:
    """Seconds between in-progress acks: a third of the shortest ack_wait in force.

    ``own`` is the worker's configured ack_wait, ``durables`` the ack_wait each of its
    durables actually has on the server (values <= 0, i.e. unknown, are ignored).
    """
    if own <= 0:
        raise ValueError(f"ack_wait must be > 0 seconds, got {own}")
    shortest = min([own, *(d for d in durables if d > 0)])
    return shortest / KEEPALIVES_PER_ACK_WAIT
