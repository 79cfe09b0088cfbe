"""NatsStore specifics: multi_last, >1024 keys, no allow_direct, no consumers left behind."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest

from ebind.embed import Node
from ebind.workflow.store_nats import NatsStore
from ebind.workflow.types import DAGMeta, DAGStatus, StepRecord, StepStatus


@pytest.fixture
async def js(nats_node_module: Node) -> AsyncIterator[Any]:
    nc = await nats.connect(nats_node_module.client_url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


def rec(dag: str, step: str) -> StepRecord:
    return StepRecord(dag_id=dag, step_id=step, fn_name="t.fn", status=StepStatus.PENDING)


async def consumers(js: Any, stream: str) -> int:
    return int((await js.stream_info(stream)).state.consumer_count)


async def test_sync_constructor_binds_lazily_and_create_is_idempotent(js: Any) -> None:
    store = NatsStore(js)  # no IO yet
    d = "d" + uuid.uuid4().hex[:8]
    await store.put_meta(d, DAGMeta(id=d, status=DAGStatus.RUNNING), 0)
    again = await NatsStore.create(js)
    assert (await again.get_meta(d))[0].id == d
    info = await js.stream_info("KV_ebind-dags")
    assert info.config.allow_direct and info.config.max_msgs_per_subject == 1
    await store.close()
    await again.close()


async def test_large_dag_lists_through_the_consumer_fallback(js: Any) -> None:
    store = await NatsStore.create(js)
    d = "big" + uuid.uuid4().hex[:8]
    n = 1100  # over the server's 1024-subject multi_last cap
    for i in range(0, n, 100):
        await asyncio.gather(
            *(store.put_step(d, f"s{j}", rec(d, f"s{j}"), 0) for j in range(i, i + 100))
        )
    await store.put_step(d + "x", "s0", rec(d + "x", "s0"), 0)
    await store.delete_step(d, "s5")
    t0 = time.perf_counter()
    steps = await store.list_steps(d)
    took = time.perf_counter() - t0
    assert len(steps) == n - 1 and {r.dag_id for r, _ in steps} == {d}
    assert took < 5
    assert await consumers(js, "KV_ebind-dags") == 0
    await store.close()


async def test_watchers_and_listings_create_no_consumers(js: Any) -> None:
    store = await NatsStore.create(js)
    d = "w" + uuid.uuid4().hex[:8]
    await store.put_step(d, "a", rec(d, "a"), 0)

    async def first() -> bytes:
        async for data in store.watch_result(d, "a"):
            return data
        raise AssertionError

    waiters = [asyncio.create_task(first()) for _ in range(50)]
    await asyncio.sleep(0.2)
    assert await consumers(js, "KV_ebind-dags") == 0
    await store.put_result(d, "a", b"1")
    async with asyncio.timeout(5):
        assert set(await asyncio.gather(*waiters)) == {b"1"}
    await store.list_steps(d)
    await store.list_dags()
    assert await consumers(js, "KV_ebind-dags") == 0
    await store.close()


async def test_bucket_without_direct_get_still_lists(js: Any) -> None:
    bucket = "nodirect" + uuid.uuid4().hex[:6]
    await js.create_key_value(bucket=bucket, history=1)  # allow_direct not set
    try:
        store = await NatsStore.create(js, bucket=bucket)
        d = "nd" + uuid.uuid4().hex[:6]
        await store.put_meta(d, DAGMeta(id=d, status=DAGStatus.RUNNING), 0)
        for s in ("a", "b"):
            await store.put_step(d, s, rec(d, s), 0)
        assert [r.step_id for r, _ in await store.list_steps(d)] == ["a", "b"]
        assert [m.id for m in await store.list_dags()] == [d]
        assert await consumers(js, f"KV_{bucket}") == 0
        await store.close()
    finally:
        with contextlib.suppress(Exception):
            await js.delete_key_value(bucket)
