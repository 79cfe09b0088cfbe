"""Sync handlers past their timeout keep their threads; the worker counts them as busy."""

from __future__ import annotations

import asyncio
import threading

import structlog
from worker_helpers import running, wait_for

from ebind.app import App
from ebind.retry import RetryPolicy


async def test_stuck_threads_hold_their_slots_so_later_sync_tasks_wait_instead_of_timing_out(
    app: App,
) -> None:
    release = threading.Event()
    started: list[str] = []

    @app.task(name="st.stuck", timeout=0.3, retry=RetryPolicy.none())
    def stuck(i: int) -> int:
        started.append(f"stuck{i}")
        release.wait(30)
        return i

    @app.task(name="st.quick", timeout=0.5, retry=RetryPolicy.none())
    def quick(i: int) -> int:
        started.append(f"quick{i}")
        return i + 1

    with structlog.testing.capture_logs() as logs:
        async with running(app, concurrency=2) as worker:
            stuck_futs = [await stuck.delay(i) for i in range(2)]
            await wait_for(lambda: worker.stuck_threads == 2)
            assert any(e["event"] == "worker.threads_stuck" for e in logs)
            quick_fut = await quick.delay(1)
            # Both threads are busy: the quick task waits in the queue, it is not pulled and
            # failed with a timeout it never had a thread to run in.

            async def both_timed_out() -> bool:
                return await app.dlq.count() == 2

            await wait_for(both_timed_out, 5)
            await asyncio.sleep(1.0)  # longer than quick's timeout, were it pulled
            assert not quick_fut.done() and "quick1" not in started
            release.set()
            assert await quick_fut.result(timeout=10) == 2
            await wait_for(lambda: worker.stuck_threads == 0)
    assert await app.dlq.count() == 2  # only the two that overran their timeout
    for fut in stuck_futs:
        assert fut.done()
