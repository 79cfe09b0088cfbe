"""Fixtures for contrib tests: a connected App and a background worker runner."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from ebind.app import App
from ebind.worker import Worker

RunWorker = Callable[..., contextlib.AbstractAsyncContextManager[Worker]]


@pytest.fixture
async def app(nats_url: str) -> AsyncIterator[App]:
    """A connected App on this test's node (tasks are registered by each test)."""
    a = App("contrib", nats_url=nats_url)
    await a.connect()
    try:
        yield a
    finally:
        await a.close()


@contextlib.asynccontextmanager
async def _running(app: App, **options: Any) -> AsyncIterator[Worker]:
    options.setdefault("scheduler", False)
    options.setdefault("ack_wait", 2.0)
    options.setdefault("shutdown_grace", 5.0)
    w = app.worker(**options)
    task = asyncio.create_task(w.run())
    try:
        for _ in range(500):
            if w.claims or task.done():
                break
            await asyncio.sleep(0.02)
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


@pytest.fixture
def run_worker() -> RunWorker:
    """``async with run_worker(app, **options) as w``: a Worker running in the background."""
    return _running
