"""Helpers for worker integration tests: run a Worker, poll, read the DLQ and streams."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec

from ebind.app import App
from ebind.queues import lane_durable
from ebind.streams import DLQ_STREAM, TASKS_STREAM
from ebind.wire import DLQEntry
from ebind.worker import Worker


@contextlib.asynccontextmanager
async def running(app: App, **options: Any) -> AsyncIterator[Worker]:
    """Run a Worker for the block; stop it gracefully (bounded) afterwards."""
    options.setdefault("scheduler", False)
    options.setdefault("ack_wait", 2.0)
    options.setdefault("shutdown_grace", 5.0)
    w = Worker(app, **options)
    task = asyncio.create_task(w.run())
    try:
        await wait_for(lambda: bool(w.claims) or task.done(), 10)
        if task.done():
            task.result()
        yield w
    finally:
        await w.stop()
        try:
            await asyncio.wait_for(task, 15)
        except BaseException:
            task.cancel()
            raise


async def wait_for(cond: Callable[[], bool | Awaitable[bool]], within: float = 10.0) -> None:
    """Poll ``cond`` until true; fail the test after ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = cond()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.02)


async def dlq_entries(app: App, name: str) -> list[DLQEntry]:
    """Every dead letter stored for task ``name`` (read with direct gets, no consumer)."""
    info = await app.js.stream_info(DLQ_STREAM, subjects_filter=f"DLQ.{name}")
    out: list[DLQEntry] = []
    if not info.state.messages:
        return out
    seq = info.state.first_seq
    while seq <= info.state.last_seq:
        with contextlib.suppress(Exception):
            raw = await app.js.get_msg(DLQ_STREAM, seq)
            if raw.subject == f"DLQ.{name}":
                out.append(msgspec.json.decode(raw.data, type=DLQEntry))
        seq += 1
    return out


async def tasks_pending(app: App) -> int:
    """Messages still stored in EBIND_TASKS."""
    info = await app.js.stream_info(TASKS_STREAM)
    return int(info.state.messages)


async def worker_consumer(app: App, name: str) -> Any:
    """ConsumerInfo of the durable of task ``name`` (default queue, normal band)."""
    return await app.js.consumer_info(TASKS_STREAM, lane_durable(name))


async def tasks_empty(app: App) -> bool:
    """EBIND_TASKS holds nothing (acks/terms are applied by the server asynchronously)."""
    return await tasks_pending(app) == 0
