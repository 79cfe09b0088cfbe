"""A concurrency slot stays held while a sync handler's thread still runs, a shutdown too."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from worker_helpers import running, wait_for

from ebind.app import App
from ebind.retry import RetryPolicy

pytestmark = pytest.mark.timeout(60)


async def test_a_sync_handler_abandoned_at_shutdown_keeps_its_concurrency_slot(app: App) -> None:
    """A worker stopping past its grace abandons a sync handler whose thread runs on.

    The shutdown's cancel cannot stop the thread, so the call's slot stays held until the
    thread returns: a second call of the concurrency=1 key on the next worker waits for it.
    """
    lock = threading.Lock()
    now_running = [0]
    most = [0]
    release = threading.Event()

    @app.task(name="lim.conc_shutdown", concurrency=1, retry=RetryPolicy.none())
    def work(n: int) -> int:
        with lock:
            now_running[0] += 1
            most[0] = max(most[0], now_running[0])
        try:
            release.wait(6.0)  # a thread cannot be interrupted
        finally:
            with lock:
                now_running[0] -= 1
        return n

    try:
        async with running(app, concurrency=4, shutdown_grace=0.3):
            await work.delay(1)
            await wait_for(lambda: now_running[0] == 1, 10)
        t0 = time.monotonic()
        assert now_running[0] == 1  # the first call's thread still runs after the worker stopped
        async with running(app, concurrency=4):
            await work.delay(2)
            with contextlib.suppress(AssertionError):
                await wait_for(lambda: most[0] >= 2, 3.0)
            overlapped = most[0]
            took = time.monotonic() - t0
    finally:
        release.set()
    assert overlapped == 1, (
        f"{overlapped} calls of one concurrency=1 key ran at once {took:.1f}s after a "
        "shutdown abandoned the first call's thread"
    )
