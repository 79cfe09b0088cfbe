"""Fixtures for the hostile-producer battery: a victim App, and a plain nats-py attacker."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest

# The worker tests' helpers (running a Worker, reading the DLQ) serve these tests too.
sys.path.insert(0, str(Path(__file__).parent.parent / "integration" / "worker"))

from ebind.app import App


@pytest.fixture
async def app(nats_url: str) -> AsyncIterator[App]:
    """The deployment under attack: a connected App whose tasks each test registers."""
    async with App("victim", nats_url=nats_url) as a:
        yield a
        if a._workflow is not None:  # a test that ran the scheduler
            await a.workflow.close()


@pytest.fixture
async def attacker(nats_url: str) -> AsyncIterator[Any]:
    """A plain nats-py JetStream context: publishes whatever bytes a test hands it."""
    nc = await nats.connect(nats_url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()
