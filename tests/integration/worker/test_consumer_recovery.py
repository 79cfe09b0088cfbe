"""A consumer deleted while the worker runs is re-created."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog

from ebind.app import App
from ebind.queues import lane_durable
from ebind.streams import TASKS_STREAM, target_durable
from tests.integration.worker.worker_helpers import running, wait_for


@pytest.mark.parametrize("which", ["lane", "claim"])
async def test_a_deleted_consumer_is_recreated_and_tasks_complete(app: App, which: str) -> None:
    @app.task(name="rec.echo")
    async def echo(i: int) -> int:
        return i

    target = "gpu" if which == "claim" else None
    durable = target_durable("gpu") if which == "claim" else lane_durable("rec.echo")
    with structlog.testing.capture_logs() as logs:
        async with running(app, worker_id="rec1", claims=["gpu"], concurrency=4):
            assert await (await echo.apply_async(args=(0,), target=target)).result(10) == 0
            await app.js.delete_consumer(TASKS_STREAM, durable)
            await asyncio.sleep(0.3)
            futs = [await echo.apply_async(args=(i,), target=target) for i in range(1, 11)]
            assert [await f.result(15) for f in futs] == list(range(1, 11))

            async def settled() -> bool:  # the ack follows the response
                info: Any = await app.js.consumer_info(TASKS_STREAM, durable)
                return bool(info.num_ack_pending == 0 and info.num_pending == 0)

            await wait_for(settled, 10)
    recreated = [e for e in logs if e["event"] == "worker.consumer_recreated"]
    assert recreated and recreated[0]["durable"] == durable
