"""Fixtures for worker tests: a connected App per test on the test's own node."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest
from worker_helpers import child_pids

from ebind.app import App
from ebind.embed import Node


async def _connected(nats_url: str) -> AsyncIterator[App]:
    a = App("wtest", nats_url=nats_url)
    await a.connect()
    try:
        yield a
    finally:
        await a.close()


@pytest.fixture
async def app(nats_url: str) -> AsyncIterator[App]:
    """A connected App on this test's node (tasks are registered by each test)."""
    async for a in _connected(nats_url):
        yield a


@pytest.fixture
async def other_app(nats_url: str) -> AsyncIterator[App]:
    """A second connected App on the same node, as a second worker process would have."""
    async for a in _connected(nats_url):
        yield a


@pytest.fixture
async def module_app(nats_node_module: Node) -> AsyncIterator[App]:
    """A connected App on the module's shared node (tests register distinct task names)."""
    async for a in _connected(nats_node_module.client_url):
        yield a


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker processes started by the test; they and their children are killed after."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for p in started:
            for pid in [p.pid, *child_pids(p.pid)]:  # a --processes supervisor's children too
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)
            p.wait(10)
