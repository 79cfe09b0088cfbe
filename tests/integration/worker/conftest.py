"""Fixtures for worker tests: a connected App per test on the test's own node."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ebind.app import App


@pytest.fixture
async def app(nats_url: str) -> AsyncIterator[App]:
    """A connected App on this test's node (tasks are registered by each test)."""
    a = App("wtest", nats_url=nats_url)
    await a.connect()
    try:
        yield a
    finally:
        await a.close()
