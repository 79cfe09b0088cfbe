"""Fixtures for workflow integration tests: Apps and in-process workers on the test's node."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from wf_helpers import connected_app

from ebind.app import App


@pytest.fixture
async def app(nats_url: str) -> AsyncIterator[App]:
    a = await connected_app(nats_url)
    try:
        yield a
    finally:
        await a.workflow.close()
        await a.close()


@pytest.fixture
async def app_with(nats_url: str) -> AsyncIterator[Callable[..., Any]]:
    """Connected Apps whose workflow takes extra options; all closed at teardown."""
    made: list[App] = []

    async def make(**wf_options: Any) -> App:
        a = await connected_app(nats_url, **wf_options)
        made.append(a)
        return a

    try:
        yield make
    finally:
        for a in made:
            await a.workflow.close()
            await a.close()


@pytest.fixture
async def start_worker(nats_url: str) -> AsyncIterator[Callable[..., Any]]:
    """Start in-process workers (each with its own App/connection); all stopped at teardown."""
    running: list[tuple[App, Any, asyncio.Task[None]]] = []

    async def start(worker_id: str, **options: Any) -> Any:
        a = await connected_app(nats_url)
        options.setdefault("ack_wait", 2.0)
        options.setdefault("shutdown_grace", 1.0)
        w = a.worker(worker_id=worker_id, **options)
        task = asyncio.create_task(w.run())
        running.append((a, w, task))
        return w

    try:
        yield start
    finally:
        for a, w, task in running:
            await w.stop()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 5)
            await a.workflow.close()
            await a.close()
