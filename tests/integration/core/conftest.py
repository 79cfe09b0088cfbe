"""Fixtures for core tests: a connected App on the test's own node, and a running worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from core_helpers import RunWorker

from ebind.app import App


@pytest.fixture
async def app(nats_url: str) -> AsyncIterator[App]:
    """A connected App (tasks are registered by each test before or after connecting)."""
    a = App("coretest", nats_url=nats_url)
    await a.connect()
    try:
        yield a
    finally:
        await a.close()


@pytest.fixture
async def run_worker(app: App) -> AsyncIterator[RunWorker]:
    """Start ``app.worker(**options)`` in a task; stopped at teardown."""
    running: list[tuple[object, asyncio.Task[None]]] = []

    async def start(**options: object) -> None:
        options.setdefault("scheduler", False)
        options.setdefault("ack_wait", 2.0)
        w = app.worker(**options)
        running.append((w, asyncio.create_task(w.run())))

    yield start
    for w, task in running:
        await w.stop()  # type: ignore[attr-defined]
        await asyncio.wait_for(task, 10)
