"""Helpers shared by the core integration tests (a uniquely named module, not conftest)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import nats
from nats.js import api

from ebind.app import App
from ebind.streams import TASKS_STREAM

RunWorker = Callable[..., Awaitable[None]]


async def tasks_count(app: App) -> int:
    """Messages currently stored in EBIND_TASKS."""
    info = await app.js.stream_info("EBIND_TASKS")
    return int(info.state.messages)


async def bound_tasks_stream(nats_url: str, max_msgs: int) -> None:
    """Provision EBIND_TASKS as an operator might: a max_msgs bound with discard new."""
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().add_stream(
            api.StreamConfig(
                name=TASKS_STREAM,
                subjects=["TASKS.>", "TASKS_TARGET.>", "TASKS_SCHEDULED.>", "TASKS_SCHEDULES.>"],
                retention=api.RetentionPolicy.WORK_QUEUE,
                max_msgs=max_msgs,
                discard=api.DiscardPolicy.NEW,
            )
        )
    finally:
        await nc.close()
