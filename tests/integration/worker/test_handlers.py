"""Handlers of every shape run on a real worker and return typed results."""

from __future__ import annotations

import threading

import msgspec
import structlog.testing
from worker_helpers import running

from ebind.app import App
from ebind.context import Context, current_context
from ebind.worker import log_middleware


class Point(msgspec.Struct):
    x: int
    y: int


async def test_async_and_sync_handlers_with_and_without_context(app: App) -> None:
    seen: dict[str, object] = {}

    @app.task(name="h.async_plain")
    async def async_plain(a: int, b: int) -> int:
        return a + b

    @app.task(name="h.async_ctx")
    async def async_ctx(ctx: Context, word: str) -> str:
        seen["async_ctx"] = (ctx.name, ctx.attempt, current_context() is ctx)
        return word.upper()

    @app.task(name="h.sync_plain")
    def sync_plain(n: int) -> list[int]:
        seen["sync_thread"] = threading.current_thread().name
        return list(range(n))

    @app.task(name="h.sync_ctx")
    def sync_ctx(ctx: Context, n: int) -> str:
        seen["sync_ctx"] = (ctx.task_id, current_context() is ctx)
        return f"{ctx.worker_id}:{n}"

    async with running(app, worker_id="w-shapes"):
        assert await (await async_plain.delay(2, 3)).result(10) == 5
        assert await (await async_ctx.delay("hi")).result(10) == "HI"
        assert await (await sync_plain.delay(3)).result(10) == [0, 1, 2]
        fut = await sync_ctx.delay(7)
        assert await fut.result(10) == "w-shapes:7"

    assert seen["async_ctx"] == ("h.async_ctx", 1, True)
    assert str(seen["sync_thread"]).startswith("ebind-task")
    assert seen["sync_ctx"] == (fut.id, True)


async def test_typed_struct_results_round_trip(app: App) -> None:
    @app.task(name="h.point")
    async def make_point(x: int) -> Point:
        return Point(x=x, y=x * 2)

    @app.task(name="h.points")
    def points(n: int) -> list[Point]:
        return [Point(x=i, y=-i) for i in range(n)]

    async with running(app):
        assert await (await make_point.delay(4)).result(10) == Point(x=4, y=8)
        assert await (await points.delay(2)).result(10) == [Point(x=0, y=0), Point(x=1, y=-1)]


async def test_many_tasks_all_complete_with_bounded_concurrency(app: App) -> None:
    active = 0
    peak = 0

    @app.task(name="h.busy")
    async def busy(i: int) -> int:
        nonlocal active, peak
        import asyncio

        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        return i

    async with running(app, concurrency=4):
        futs = [await busy.delay(i) for i in range(60)]
        assert [await f.result(20) for f in futs] == list(range(60))
    assert peak <= 4


async def test_log_middleware_writes_one_line_per_attempt(app: App) -> None:
    calls = 0

    @app.task(
        name="h.flaky",
        retry=__import__("ebind").RetryPolicy(initial_interval=0.05, maximum_attempts=3),
    )
    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError("not yet")
        return "ok"

    @app.task(name="h.ok")
    async def ok() -> int:
        return 1

    with structlog.testing.capture_logs() as logs:
        async with running(app, middleware=[log_middleware]):
            f1 = await flaky.delay()
            f2 = await ok.delay()
            assert await f1.result(10) == "ok"
            assert await f2.result(10) == 1
    lines = [e for e in logs if str(e["event"]).startswith("task.")]
    by_task = {}
    for e in lines:
        by_task.setdefault(e["task_id"], []).append((e["event"], e["attempt"]))
    assert by_task[f1.id] == [("task.retrying", 1), ("task.retrying", 2), ("task.succeeded", 3)]
    assert by_task[f2.id] == [("task.succeeded", 1)]
    for e in lines:
        assert {"task_id", "task_name", "attempt", "duration_ms", "worker_id", "error_kind"} <= set(
            e
        )
