"""Priority bands with one slot and a backlog: strict order, and what starvation means."""

from __future__ import annotations

import asyncio

from ebind.context import Context
from tests.integration.queues.conftest import AppFactory
from tests.integration.worker.worker_helpers import running


async def test_one_slot_takes_the_backlog_high_then_normal_then_low(service: AppFactory) -> None:
    order: list[str] = []
    async with service("prio") as app:

        @app.task(name="prio.job")
        async def job(ctx: Context, label: str) -> str:
            order.append(label)
            return label

        futs = []
        for i in range(4):  # interleaved, low first: arrival order is not execution order
            for band in ("low", "normal", "high"):
                futs.append(await job.apply_async((f"{band}{i}",), priority=band))
        async with running(app, concurrency=1):
            for f in futs:
                await f.result(15)
    assert order == [f"{band}{i}" for band in ("high", "normal", "low") for i in range(4)]


async def test_strict_priority_a_low_task_waits_out_the_whole_high_backlog(
    service: AppFactory,
) -> None:
    """Strict bands starve: a low task enqueued first still runs only once no high task
    is waiting, including high tasks enqueued while it waits."""
    order: list[str] = []
    async with service("starve") as app:

        @app.task(name="starve.job", priority="high")
        async def job(ctx: Context, label: str) -> str:
            order.append(label)
            if label == "high0":  # more urgent work keeps arriving while the backlog drains
                for i in range(3):
                    await job.apply_async((f"late{i}",))
            return label

        low = await job.apply_async(("low",), priority="low")
        highs = [await job.delay(f"high{i}") for i in range(4)]
        async with running(app, concurrency=1):
            await low.result(15)
            for f in highs:
                await f.result(15)
    assert order[0] == "high0"
    assert order[-1] == "low"
    assert sorted(order[:-1]) == sorted(
        [*(f"high{i}" for i in range(4)), "late0", "late1", "late2"]
    )


async def test_high_work_arriving_while_lows_run_goes_next(service: AppFactory) -> None:
    """A busy worker still sees a higher band: it runs right after the task in progress."""
    order: list[str] = []
    first_started = asyncio.Event()
    async with service("arrive") as app:

        @app.task(name="arrive.job")
        async def job(label: str) -> str:
            order.append(label)
            first_started.set()
            await asyncio.sleep(0.2)
            return label

        lows = [await job.apply_async((f"low{i}",), priority="low") for i in range(5)]
        async with running(app, concurrency=1):
            await asyncio.wait_for(first_started.wait(), 10)
            highs = [await job.apply_async((f"high{i}",), priority="high") for i in range(2)]
            for f in [*lows, *highs]:
                await f.result(15)
    assert order[1:3] == ["high0", "high1"], order
