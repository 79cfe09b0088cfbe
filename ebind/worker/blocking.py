"""Naming the async handler that blocks the event loop.

An ``async def`` handler that calls ``time.sleep``, does sync I/O or long CPU work stops
the whole worker: no in-progress acks (messages may be redelivered elsewhere), no other
handler, no scheduler. The keepalive notices such a stall only afterwards and cannot say
who caused it. :class:`Watched` drives a handler coroutine one step at a time and times
each step between two awaits; a step longer than ``limit`` is logged with the task's
name and id, so the warning points at the code to fix.
"""

from __future__ import annotations

import time
from collections.abc import Coroutine, Generator
from typing import Any, Generic, TypeVar

from ebind.logging import get_logger

__all__ = ["Watched"]

_T = TypeVar("_T")
_log = get_logger("ebind.worker")


class Watched(Generic[_T]):
    """An awaitable running ``coro`` and reporting any step that held the loop too long.

    Args:
        coro: the handler's coroutine.
        task_name: the task's registered name (for the log event).
        task_id: the task's id (for the log event).
        limit: seconds one step may run without awaiting before it is reported.
    """

    __slots__ = ("_coro", "_limit", "_task_id", "_task_name")

    def __init__(
        self, coro: Coroutine[Any, Any, _T], *, task_name: str, task_id: str, limit: float
    ) -> None:
        self._coro = coro
        self._task_name = task_name
        self._task_id = task_id
        self._limit = limit

    def __await__(self) -> Generator[Any, Any, _T]:
        coro = self._coro
        value: Any = None
        error: BaseException | None = None
        while True:
            start = time.perf_counter()
            try:
                yielded = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as stop:
                self._check(start)
                result: _T = stop.value
                return result
            except BaseException:
                self._check(start)
                raise
            self._check(start)
            try:
                value, error = (yield yielded), None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation and timeouts go to the handler
                value, error = None, exc

    def _check(self, start: float) -> None:
        held = time.perf_counter() - start
        if held > self._limit:
            _log.warning(
                "worker.handler_blocked_loop",
                task_name=self._task_name,
                task_id=self._task_id,
                blocked_ms=round(held * 1000),
                hint=(
                    "an async handler ran without awaiting (time.sleep, sync I/O or CPU "
                    "work); in-progress acks and other tasks waited. Await the async "
                    "variant, or make the handler a plain def (it then runs in a thread)"
                ),
            )
