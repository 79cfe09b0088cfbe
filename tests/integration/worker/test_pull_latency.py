"""Targeted work is not held back by the lanes' open pull requests, nor lane work by claims.

Every lane of an idle worker keeps a probe open; a claim puller must still get its targeted
messages at once, and an untargeted one too (liveness bound, not a benchmark).
"""

from __future__ import annotations

import time

from ebind.app import App
from tests.integration.worker.worker_helpers import running


async def test_targeted_tasks_on_an_idle_worker_run_without_waiting(app: App) -> None:
    @app.task(name="lat.noop")
    async def noop(i: int) -> int:
        return i

    async with running(app, worker_id="lat1", claims=["gpu"], concurrency=4):
        for target in ("gpu", "lat1", "worker:lat1", None):
            for i in range(20):
                start = time.monotonic()
                fut = await noop.apply_async(args=(i,), target=target)
                assert await fut.result(5) == i
                took = time.monotonic() - start
                assert took < 1.0, f"task {i} to {target!r} took {took:.2f}s"
