"""Puller.stop passes on a cancel of its own caller (a second signal: stop now)."""

from __future__ import annotations

import asyncio

import pytest

from ebind.worker.pull import Budget, Puller


async def test_a_cancel_of_stop_itself_is_not_swallowed() -> None:
    puller = Puller(
        None, stream="S", durable="d", budget=Budget(1), on_msg=lambda m, p: None, expires=1.0
    )

    async def loop_that_takes_time_to_end() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.sleep(0.2)  # a pull request settling while it is cancelled

    puller._task = asyncio.create_task(loop_that_takes_time_to_end())
    await asyncio.sleep(0)
    stopping = asyncio.create_task(puller.stop())
    await asyncio.sleep(0.05)
    stopping.cancel()  # "stop now" while stop() waits for the loop
    with pytest.raises(asyncio.CancelledError):
        await stopping
