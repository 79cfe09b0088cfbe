"""Workers with different ack_wait share a durable: a long task is never redelivered mid-run."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from worker_helpers import running, wait_for, worker_consumer

from ebind.app import App
from ebind.context import Context

TASK_SECONDS = 4.0


def _register(apps: list[App], runs: list[str]) -> Any:
    """Register the long task on every app; returns the first app's task (to submit it)."""
    tasks = []
    for a in apps:

        @a.task(name="aw.long")
        async def long(ctx: Context) -> str:
            runs.append(ctx.worker_id)
            await asyncio.sleep(TASK_SECONDS)
            return ctx.worker_id

        tasks.append(long)
    return tasks[0]


async def test_later_worker_with_short_ack_wait_does_not_redeliver_a_long_task(
    app: App, other_app: App
) -> None:
    """A (6 s) runs a 4 s task; B starts with 1 s meanwhile: the task runs once, on A."""
    runs: list[str] = []
    long = _register([app, other_app], runs)
    async with running(app, worker_id="a", ack_wait=6.0) as a:
        fut = await long.delay()
        await wait_for(lambda: runs == ["a"])
        async with running(other_app, worker_id="b", ack_wait=1.0) as b:
            assert await fut.result(20) == "a"
            assert b.keepalive_interval == pytest.approx(1.0 / 3, rel=0.01)
        info = await worker_consumer(app, "aw.long")
        assert a.keepalive_interval == pytest.approx(2.0, rel=0.01)
    assert runs == ["a"]
    assert info.config.ack_wait == pytest.approx(6.0)
    assert info.num_redelivered == 0


async def test_worker_with_long_ack_wait_keeps_alive_for_the_shorter_durable(
    app: App, other_app: App
) -> None:
    """The durable was made with 1 s; A (6 s) joins and runs a 4 s task while B runs: once."""
    runs: list[str] = []
    long = _register([app, other_app], runs)
    async with running(other_app, worker_id="b", ack_wait=1.0):
        pass  # B created the durable with its ack_wait, then left
    async with running(app, worker_id="a", ack_wait=6.0) as a:
        keepalive = a.keepalive_interval
        fut = await long.delay()
        await wait_for(lambda: runs == ["a"])
        async with running(other_app, worker_id="b", ack_wait=1.0):
            assert await fut.result(20) == "a"
        info = await worker_consumer(app, "aw.long")
    assert runs == ["a"]
    assert keepalive == pytest.approx(1.0 / 3, rel=0.01)
    assert info.config.ack_wait == pytest.approx(1.0)
    assert info.num_redelivered == 0
