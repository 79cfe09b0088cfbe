"""Fixtures for signing / payload-codec tests: Apps with trust settings on the test's node."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "worker"))

from trust_helpers import OpenApp
from trust_tasks import app as tasks_app

from ebind.app import App


@pytest.fixture
async def open_app(nats_url: str) -> AsyncIterator[OpenApp]:
    """``await open_app(signing_keys=..., payload_codec=...)``: connected, closed at teardown."""
    opened: list[App] = []

    async def open_(**options: Any) -> App:
        a = App("trust", nats_url=nats_url, **options)
        a.registry = tasks_app.registry
        await a.connect()
        opened.append(a)
        return a

    try:
        yield open_
    finally:
        for a in reversed(opened):
            with contextlib.suppress(Exception):
                await a.close()
