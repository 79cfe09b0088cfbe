"""``Watched``: drives a handler coroutine unchanged, and reports steps that hold the loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator

import pytest
import structlog

from ebind.worker.blocking import Watched


def _watch(coro: object, limit: float = 0.05) -> Watched[object]:
    return Watched(coro, task_name="t.x", task_id="id-1", limit=limit)  # type: ignore[arg-type]


async def test_results_exceptions_and_awaits_pass_through() -> None:
    async def ok(n: int) -> int:
        for _ in range(n):
            await asyncio.sleep(0)
        return n * 2

    async def bad() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    assert await _watch(ok(3)) == 6
    with pytest.raises(ValueError, match="boom"):
        await _watch(bad())


async def test_cancellation_and_timeouts_reach_the_handler() -> None:
    seen: list[str] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await _watch(slow())
    assert seen == ["cancelled"]

    async def swallow() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "cleaned up"
        return "never"

    task = asyncio.ensure_future(_watch(swallow()))
    await asyncio.sleep(0.01)
    task.cancel()
    assert await task == "cleaned up"  # the handler decides, as without the wrapper


async def test_only_a_step_longer_than_the_limit_is_reported() -> None:
    async def blocks() -> None:
        await asyncio.sleep(0.1)  # awaiting: fine
        time.sleep(0.12)  # noqa: ASYNC251 - holding the loop on purpose
        await asyncio.sleep(0)

    with structlog.testing.capture_logs() as logs:
        await _watch(blocks(), limit=0.1)
    events = [e for e in logs if e["event"] == "worker.handler_blocked_loop"]
    assert len(events) == 1
    assert (events[0]["task_name"], events[0]["task_id"]) == ("t.x", "id-1")
    assert events[0]["blocked_ms"] >= 120


class _Suspend:
    """Yields once to whoever drives the coroutine (no event loop needed)."""

    def __await__(self) -> Generator[None, None, None]:
        yield


def test_closing_an_unfinished_wrapper_closes_the_handler() -> None:
    closed: list[bool] = []

    async def handler() -> None:
        try:
            await _Suspend()
        finally:
            closed.append(True)

    gen = _watch(handler()).__await__()
    next(gen)  # started, suspended at its first await
    gen.close()
    assert closed == [True]
