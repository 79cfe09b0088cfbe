"""An async handler that blocks the event loop is named in a warning."""

from __future__ import annotations

import asyncio
import time

import structlog
from worker_helpers import running

from ebind.app import App


async def test_an_async_handler_holding_the_loop_is_named_and_still_completes(app: App) -> None:
    @app.task(name="a5.block")
    async def block(seconds: float) -> str:
        await asyncio.sleep(0)
        time.sleep(seconds)  # noqa: ASYNC251 - the bug under test, on purpose
        await asyncio.sleep(0)
        return "done"

    @app.task(name="a5.polite")
    async def polite() -> str:
        await asyncio.sleep(0.8)  # long, but awaiting: not a block
        return "done"

    @app.task(name="a5.sync")
    def sync_sleep() -> str:
        time.sleep(0.8)  # a plain def runs in a thread: not a block either
        return "done"

    with structlog.testing.capture_logs() as logs:
        async with running(app, ack_wait=3.0):
            futs = [
                await app.enqueue("a5.block", 0.8),
                await app.enqueue("a5.polite"),
                await app.enqueue("a5.sync"),
            ]
            assert await asyncio.gather(*(f.result(timeout=15) for f in futs)) == ["done"] * 3
    blocked = [e for e in logs if e["event"] == "worker.handler_blocked_loop"]
    assert [e["task_name"] for e in blocked] == ["a5.block"]
    assert blocked[0]["task_id"] == futs[0].id
    assert blocked[0]["blocked_ms"] >= 800 and blocked[0]["log_level"] == "warning"
    assert "plain def" in blocked[0]["hint"]
