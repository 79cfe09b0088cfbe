"""Deliveries held ahead of free slots when a worker stops: they run in the grace, once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from worker_helpers import running, wait_for

from ebind.app import App
from ebind.context import Context
from ebind.retry import RetryPolicy
from ebind.worker import Worker


async def _warm_up(quick: Any) -> None:
    """Short tasks first: a short slot time, so the worker holds deliveries ahead."""
    for f in await quick.starmap([()] * 30):
        await f.result(20)


async def test_a_held_delivery_handed_back_at_stop_does_not_cost_an_attempt(
    app: App, other_app: App
) -> None:
    # A one-attempt task that was only held (never started) by a stopping worker must
    # still run once elsewhere: the hand-back is not an attempt that ended without outcome.
    ran: list[tuple[str, int]] = []
    gate = asyncio.Event()

    def register(a: App) -> Any:
        @a.task(name="pfr.quick")
        async def quick() -> None:
            return None

        @a.task(name="pfr.once", retry=RetryPolicy.none())
        async def once(ctx: Context, i: int) -> int:
            ran.append((ctx.worker_id, i))
            if ctx.worker_id == "A":
                await gate.wait()
            return i

        return quick, once

    quick, once = register(app)
    register(other_app)
    a = Worker(app, worker_id="A", concurrency=1, prefetch=4, scheduler=False, ack_wait=5.0)
    a_run = asyncio.create_task(a.run())
    try:
        await wait_for(lambda: a.is_consuming, 10)
        await _warm_up(quick)
        futs = await once.map(range(4))
        await wait_for(lambda: a.queued == 3 and len(ran) == 1, 10)
        await a.stop()
        async with running(other_app, worker_id="B"):
            gate.set()
            await a_run
            results = await asyncio.gather(*(f.result(10) for f in futs), return_exceptions=True)
    finally:
        gate.set()
        if not a_run.done():
            a_run.cancel()
    # Each ran exactly once and answered its value; none was dead-lettered as worker_lost.
    assert results == [0, 1, 2, 3], results
    assert sorted(i for _, i in ran) == [0, 1, 2, 3], ran


@pytest.mark.parametrize("prefetch", [1, 4])
async def test_a_task_held_for_this_very_worker_still_runs_in_the_grace(
    app: App, prefetch: int
) -> None:
    # A task targeted at this worker's own id can run nowhere else: handing it back at a
    # graceful stop leaves it to nobody, where before it ran within the grace once the
    # slot freed. Each claim of an idle worker keeps a one-message request open, so both
    # tasks below are delivered: one runs, the other waits for the slot.
    ran: list[int] = []
    gate = asyncio.Event()

    @app.task(name="pfr.mine")
    async def mine(i: int) -> int:
        ran.append(i)
        if len(ran) == 1:
            await gate.wait()
        return i

    a = Worker(
        app,
        worker_id="A",
        concurrency=1,
        prefetch=prefetch,
        scheduler=False,
        ack_wait=5.0,
        shutdown_grace=10.0,
    )
    a_run = asyncio.create_task(a.run())
    try:
        await wait_for(lambda: a.is_consuming, 10)
        await asyncio.sleep(0.2)  # the claim pullers' idle requests are open
        futs = [
            await mine.apply_async(args=(0,), target="worker:A"),
            await mine.apply_async(args=(1,), target="A"),
        ]
        await wait_for(lambda: len(ran) == 1 and a.queued == 1, 10)
        await a.stop()
        await asyncio.sleep(0.2)
        gate.set()  # the slot frees well within the grace
        await asyncio.wait_for(a_run, 15)
        got = await asyncio.gather(*(f.result(3) for f in futs), return_exceptions=True)
        assert got == [0, 1], f"a task only this worker may run was handed back: {got}"
    finally:
        gate.set()
        if not a_run.done():
            a_run.cancel()
