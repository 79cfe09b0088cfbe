"""Blocking API beside the async API: enqueue + result latency and throughput, same run.

One embedded node and one ``ebind worker`` process serving ``bench.noop`` (the App of
``bench/tasks.py``). The same producer work is measured through the async API
(``await task.delay()`` / ``await fut.result()``) and through the blocking API
(``task.sync.delay().get()``), each on its own App, in alternating blocks so that both see
the same load (the numbers of a shared machine drift within seconds):

- latency: one task in flight, enqueue then wait for its result, p50 / p99;
- loop: ``delay()`` N times one after another, then ``get()`` each result;
- batch: N enqueues published concurrently (``asyncio.gather`` / ``task.sync.delay_many``),
  then every result (``asyncio.gather`` / ``app.sync.gather``).

The blocking API pays two cross-thread hand-offs per call (to the background loop and
back); the target is within 1.5x of the async API. The last line printed is one JSON object.

Usage: ``python bench/sync.py [--tasks 2000] [--latency 400] [--rounds 8]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from tasks import ROOT, _pct, _spawn, _stop, _wait_line, noop  # noqa: E402

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import ebind.logging  # noqa: E402
from ebind.app import App  # noqa: E402
from ebind.task import Task  # noqa: E402

Row = dict[str, float]


class _Side:
    """Samples of one API: latencies (ms) and, per throughput kind, tasks and seconds."""

    def __init__(self) -> None:
        self.lat_ms: list[float] = []
        self.done = {"loop": [0, 0.0], "batch": [0, 0.0]}

    def add(self, kind: str, tasks: int, seconds: float) -> None:
        self.done[kind][0] += tasks
        self.done[kind][1] += seconds

    def row(self) -> Row:
        return {
            "p50_ms": statistics.median(self.lat_ms),
            "p99_ms": _pct(self.lat_ms, 0.99),
            "loop_per_s": self.done["loop"][0] / self.done["loop"][1],
            "batch_per_s": self.done["batch"][0] / self.done["batch"][1],
        }


async def _async_block(task: Task[[], None], side: _Side, n: int, lat_n: int) -> None:
    for _ in range(lat_n):
        s = time.perf_counter()
        await (await task.delay()).result(30)
        side.lat_ms.append((time.perf_counter() - s) * 1000)
    t0 = time.perf_counter()
    futs = [await task.delay() for _ in range(n)]
    for f in futs:
        await f.result(30)
    side.add("loop", n, time.perf_counter() - t0)
    t0 = time.perf_counter()
    futs = list(await asyncio.gather(*(task.delay() for _ in range(n))))
    await asyncio.gather(*(f.result(30) for f in futs))
    side.add("batch", n, time.perf_counter() - t0)


def _sync_block(task: Task[[], None], side: _Side, n: int, lat_n: int) -> None:
    for _ in range(lat_n):
        s = time.perf_counter()
        task.sync.delay().get(30)
        side.lat_ms.append((time.perf_counter() - s) * 1000)
    t0 = time.perf_counter()
    handles = [task.sync.delay() for _ in range(n)]
    for h in handles:
        h.get(30)
    side.add("loop", n, time.perf_counter() - t0)
    t0 = time.perf_counter()
    handles = task.sync.delay_many(() for _ in range(n))
    task.app.sync.gather(handles, timeout=60)
    side.add("batch", n, time.perf_counter() - t0)


def _measure(url: str, n: int, lat_n: int, rounds: int) -> dict[str, Row]:
    """Alternate blocks of the two APIs so both see the same load on a shared machine."""
    loop = asyncio.new_event_loop()  # the async API's loop, driven from this thread
    async_app = App("bench-async", nats_url=url, publish_timeout=30.0)
    sync_app = App("bench-sync", nats_url=url, publish_timeout=30.0)
    a_task: Task[[], None] = Task(async_app, noop.spec)
    s_task: Task[[], None] = Task(sync_app, noop.spec)
    a_side, s_side = _Side(), _Side()
    loop.run_until_complete(async_app.connect())
    try:
        # Warm up both (imports, first consumer round trips) outside the measurement.
        loop.run_until_complete(_async_block(a_task, _Side(), 100, 50))
        _sync_block(s_task, _Side(), 100, 50)
        per_n, per_lat = max(1, n // rounds), max(1, lat_n // rounds)
        for r in range(rounds):
            run_async = lambda: loop.run_until_complete(  # noqa: E731
                _async_block(a_task, a_side, per_n, per_lat)
            )
            run_sync = lambda: _sync_block(s_task, s_side, per_n, per_lat)  # noqa: E731
            for step in (run_async, run_sync) if r % 2 == 0 else (run_sync, run_async):
                step()
    finally:
        sync_app.sync.close()
        loop.run_until_complete(async_app.close())
        loop.close()
    return {"async": a_side.row(), "sync": s_side.row()}


def _ratios(a: Row, s: Row) -> Row:
    """How many times worse the blocking API is than the async one, per metric (1.0 = equal)."""
    slower: Callable[[str], float] = lambda k: s[k] / a[k]  # noqa: E731
    return {
        "p50": slower("p50_ms"),
        "p99": slower("p99_ms"),
        "loop": a["loop_per_s"] / s["loop_per_s"],
        "batch": a["batch_per_s"] / s["batch_per_s"],
    }


def run(n: int, lat_n: int, rounds: int) -> dict[str, Any]:
    """Start a node and a worker, measure both APIs, return the rows and the ratios."""
    from ebind.embed import start_node

    with tempfile.TemporaryDirectory(prefix="ebind-bench-sync-") as store:
        node = start_node(store_dir=store)
        log_path = Path(tempfile.mkstemp(prefix="ebind-bench-sync-worker-", suffix=".log")[1])
        cmd = [sys.executable, "-m", "ebind", "worker", "-A", "tasks:app"]
        cmd += ["--nats", node.client_url, "--no-scheduler", "-c", "64", "--log-level", "warning"]
        proc = _spawn(cmd, log_path, cwd=HERE)
        try:
            _wait_line(proc, log_path, b" ready")
            rows = _measure(node.client_url, n, lat_n, rounds)
        finally:
            _stop(proc)
            os.unlink(log_path)
            node.shutdown()
    return {"rows": rows, "sync_over_async": _ratios(rows["async"], rows["sync"])}


def main() -> None:
    """Parse the arguments, run, print a table and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per throughput run")
    parser.add_argument("--latency", type=int, default=400, help="one-in-flight samples")
    parser.add_argument("--rounds", type=int, default=8, help="alternating blocks per API")
    opts = parser.parse_args()
    ebind.logging.configure(level="warning")
    result = run(opts.tasks, opts.latency, opts.rounds)
    print(f"{'api':<6} {'p50 ms':>8} {'p99 ms':>8} {'loop/s':>9} {'batch/s':>9}")
    for api, row in result["rows"].items():
        print(
            f"{api:<6} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
            f"{row['loop_per_s']:>9.0f} {row['batch_per_s']:>9.0f}"
        )
    r = result["sync_over_async"]
    print(
        f"sync/async: p50 {r['p50']:.2f}x  p99 {r['p99']:.2f}x  "
        f"loop {r['loop']:.2f}x  batch {r['batch']:.2f}x  (target <= 1.5x)"
    )
    print(json.dumps({"bench": "sync", **result}))


if __name__ == "__main__":
    main()
