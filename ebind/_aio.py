"""asyncio helpers for Python 3.11 behaviour that ebind's loops must not trip over."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["raise_if_cancelling", "wait_event"]


def raise_if_cancelling() -> None:
    """Raise CancelledError if the current task was asked to stop and that was swallowed.

    On Python 3.11, ``asyncio.wait_for`` (used inside nats-py requests) returns the result
    instead of raising when the task is cancelled just as the result arrives. The task's
    cancel request stays pending (``Task.cancelling()``), so a long-running loop calls this
    after such awaits: otherwise it would run on, and whoever awaits it hangs.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def wait_event(event: asyncio.Event, seconds: float) -> None:
    """Wait until ``event`` is set or ``seconds`` pass; a pending cancel still raises."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    raise_if_cancelling()
