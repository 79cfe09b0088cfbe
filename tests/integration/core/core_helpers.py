"""Helpers shared by the core integration tests (a uniquely named module, not conftest)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ebind.app import App

RunWorker = Callable[..., Awaitable[None]]


async def tasks_count(app: App) -> int:
    """Messages currently stored in EBIND_TASKS."""
    info = await app.js.stream_info("EBIND_TASKS")
    return int(info.state.messages)
