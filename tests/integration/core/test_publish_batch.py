"""Batch enqueue (Task.map, Task.starmap): publishes pipelined, every PubAck checked."""

from __future__ import annotations

import asyncio

import pytest
from core_helpers import RunWorker, tasks_count

from ebind.app import App
from ebind.client import Publisher
from ebind.errors import PayloadTooLarge, PublishFailed
from ebind.wire import TaskEnvelope


def _envs(prefix: str, n: int) -> list[TaskEnvelope]:
    return [TaskEnvelope(id=f"{prefix}-{i}", name="batch.task") for i in range(n)]


async def test_map_and_starmap_run_every_task_and_return_their_futures(
    app: App, run_worker: RunWorker
) -> None:
    @app.task(name="batch.double")
    async def double(x: int) -> int:
        return 2 * x

    @app.task(name="batch.add")
    async def add(a: int, b: int) -> int:
        return a + b

    await run_worker()
    futs = await double.map(range(40))
    assert len({f.id for f in futs}) == 40
    assert [await f.result(10) for f in futs] == [2 * i for i in range(40)]
    pairs = await add.starmap((i, i + 1) for i in range(10))
    assert [await f.result(10) for f in pairs] == [2 * i + 1 for i in range(10)]
    assert await double.map([]) == []


async def test_a_batch_larger_than_the_window_settles_its_own_oldest_first(app: App) -> None:
    pub = Publisher(app.nc, app.js, timeout=5.0, window=4)
    await pub.start()
    before = await tasks_count(app)
    # Another caller holds part of the window meanwhile; neither waits on the other forever.
    other = asyncio.gather(*[pub.publish(e) for e in _envs("other", 6)])
    assert await pub.publish_many(_envs("win", 30)) == []
    await other
    assert await tasks_count(app) == before + 36
    assert pub._acks == {}


async def test_unconfirmed_publishes_of_a_batch_each_fail_within_the_bound(app: App) -> None:
    pub = Publisher(app.nc, app.js, timeout=0.3, window=4)
    await pub.start()
    pub._prefix = "_INBOX.ebind-test-nowhere."  # stored, never confirmed
    # Others hold the whole window meanwhile: every item still ends with a typed error.
    others = asyncio.gather(*[pub.publish(e) for e in _envs("held", 4)], return_exceptions=True)
    await asyncio.sleep(0)
    failures = await pub.publish_many(_envs("lost", 6))
    assert [i for i, _ in failures] == list(range(6))
    assert all(isinstance(e, PublishFailed) and e.task_id == f"lost-{i}" for i, e in failures)
    assert all(isinstance(r, PublishFailed) for r in await others)
    assert pub._acks == {}


async def test_an_oversized_item_publishes_nothing(app: App) -> None:
    @app.task(name="batch.echo")
    async def echo(s: str) -> str:
        return s

    before = await tasks_count(app)
    with pytest.raises(PayloadTooLarge):
        await echo.map(["small", "x" * (int(app.nc.max_payload) + 1)])
    assert await tasks_count(app) == before


async def test_a_cancelled_batch_leaves_no_pubacks_waited_for(app: App) -> None:
    pub = Publisher(app.nc, app.js, timeout=5.0, window=4)
    await pub.start()
    pub._prefix = "_INBOX.ebind-test-nowhere."  # never confirmed: the batch waits
    batch = asyncio.create_task(pub.publish_many(_envs("gone", 10)))
    for _ in range(3):  # publishing only buffers: the batch fills the window, then waits
        await asyncio.sleep(0)
    assert len(pub._acks) == 4
    batch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await batch
    assert pub._acks == {}
