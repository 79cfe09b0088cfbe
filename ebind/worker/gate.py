"""Execution slots handed out by rank: a held message of a higher band starts first.

A worker may hold more messages than it runs (claim and lane pullers keep one uncounted
request open each), so the order in which held messages start matters: a waiting
high-band message starts before a low-band one that arrived earlier. Equal ranks start in
arrival order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

__all__ = ["RankedSlots"]


class RankedSlots:
    """A semaphore whose waiters are served lowest rank first, then first come."""

    def __init__(self, capacity: int) -> None:
        self._free = capacity
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def waiting(self) -> int:
        """Messages held and waiting for a slot."""
        return len(self._waiting)

    def try_acquire(self) -> bool:
        """Take a slot at once if one is free and nobody waits for it; False otherwise."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return True
        return False

    async def acquire(self, rank: int) -> None:
        """Wait for a slot; lower ranks are served first."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (rank, next(self._order), fut)
        heapq.heappush(self._waiting, entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed over just before the cancel: pass it on
            else:
                self._waiting.remove(entry)  # only live waiters stay queued
                heapq.heapify(self._waiting)
            raise

    def take(self) -> None:
        """Occupy a slot at once, even when none is free (a thread that outlived its task).

        The next :meth:`release` repays it before any waiter is served.
        """
        self._free -= 1

    def release(self) -> None:
        """Give a slot back: to the best waiter, else to the pool."""
        if self._free < 0:
            self._free += 1  # repays a take() made while no slot was free
            return
        while self._waiting:
            _, _, fut = heapq.heappop(self._waiting)
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1
