"""The step hook forgets a delivery handed back without an outcome, and only that delivery."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from simworker import make_wf

from ebind.workflow import DAG, StepStatus
from ebind.workflow.store_mem import MemStore


@contextlib.asynccontextmanager
async def started(start_write_delay: float) -> AsyncIterator[tuple[Any, MemStore, Any]]:
    """A one-step DAG whose step worker w1 started (attempt 1); closed after the block."""
    store = MemStore()
    wf, _, bus, enq = make_wf(store=store, start_write_delay=start_write_delay)
    dag = DAG(id="d")
    dag.step("a", "echo", 1)
    await dag.submit(wf)
    env = msgspec.structs.replace(enq.envelopes[0], attempt=1, worker_id="w1")
    assert await wf.hook().on_step_started(env)
    try:
        yield wf.hook(), store, env
    finally:
        await wf.close()
        await bus.close()


async def test_release_drops_the_claim_and_writes_the_pending_start() -> None:
    async with started(10.0) as (hook, store, env):
        assert hook.announced("w1") == ["d:a"]
        hook.on_step_released(env, 0.0)
        assert not hook._claims
        await asyncio.sleep(0.05)
        rec, _ = await store.get_step("d", "a")
        assert (rec.status, rec.attempt, rec.worker_id) == (StepStatus.RUNNING, 1, "w1")
        # Listed until the redelivery was due plus the grace (five 0.02 s intervals here).
        await asyncio.sleep(0.2)
        assert hook.announced("w1") == []


async def test_release_by_an_older_delivery_leaves_the_newer_claim() -> None:
    async with started(10.0) as (hook, _, env):
        older = msgspec.structs.replace(env, attempt=0)
        hook.on_step_released(older, 0.0)
        await asyncio.sleep(0.2)
        assert list(hook._claims) == [("d", "a")]
        assert hook.announced("w1") == ["d:a"]


async def test_redelivery_after_a_release_runs_and_finishes() -> None:
    async with started(0.0) as (hook, store, env):
        hook.on_step_released(env, 0.0)
        again = msgspec.structs.replace(env, attempt=2, worker_id="w2")
        assert await hook.on_step_started(again)
        await hook.on_step_done(again, b"1")
        rec, _ = await store.get_step("d", "a")
        assert (rec.status, rec.attempt, rec.worker_id) == (StepStatus.DONE, 2, "w2")
        assert hook.announced("w2") == []
        await asyncio.sleep(0.2)
        assert hook.announced("w1") == []


async def test_release_of_a_plain_task_is_a_no_op() -> None:
    async with started(10.0) as (hook, _, env):
        hook.on_step_released(msgspec.structs.replace(env, dag_id="", step_id=""), 0.0)
        assert list(hook._claims) == [("d", "a")]
