"""Rate-limit benchmark: what a cluster-wide limit costs per task, and its KV operations.

On one embedded node, one in-process worker runs ``--tasks`` no-op tasks of each kind:

1. ``free``: no limit (the floor of this run);
2. ``unbound``: ``rate_limit="1000000/s"``, a limit far above what the worker reaches, so it
   never makes a task wait: what is left is the cost of admission itself;
3. ``bound``: ``rate_limit=--rate`` (500/s by default), a limit the worker does reach.

End-to-end throughput on a shared machine varies by more than the limiter costs, so the
admission step is also timed alone: ``admit()`` of a task whose token is already leased
(the path nearly every task takes at high rates), best of five runs of 100 000 calls.

The kinds take turns for ``--rounds`` rounds and each keeps its best round (other
processes' load skews one round, not the comparison). Each line reports enqueue → all
results throughput and the KV operations (reads and compare-and-set writes on the
``ebind-ratelimits`` bucket) per task. The last line printed is one JSON object with the
cost per task of an unbound limit in microseconds and relative to ``free``.

Usage: ``python bench/limits.py [--tasks 4000] [--rate 500/s] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ebind.app import App  # noqa: E402

LANES = 500  # concurrent enqueues


def _app(url: str, rate: str) -> App:
    app = App("bench-limits", nats_url=url)

    @app.task(name="bench.free")
    async def free() -> None:
        """No limit."""

    @app.task(name="bench.unbound", rate_limit="1000000/s")
    async def unbound() -> None:
        """A limit that never binds."""

    @app.task(name="bench.bound", rate_limit=rate)
    async def bound() -> None:
        """A limit the worker reaches."""

    return app


async def _round(app: App, worker: Any, name: str, tasks: int) -> tuple[float, float]:
    """Tasks per second and KV operations per task for ``tasks`` of ``name``."""
    admission = worker._runner.admission
    ops_before = admission.kv_ops
    start = time.perf_counter()
    futs: list[Any] = []
    for first in range(0, tasks, LANES):
        batch = min(LANES, tasks - first)
        futs += await asyncio.gather(*(app.enqueue(name) for _ in range(batch)))
    for fut in futs:
        await fut.result(120)
    elapsed = time.perf_counter() - start
    return tasks / elapsed, (admission.kv_ops - ops_before) / tasks


async def fast_path_us(calls: int = 100_000, runs: int = 5) -> float:
    """Microseconds per ``admit()`` of a task whose token is leased already (best run)."""
    from ebind.ratelimit import Lease
    from ebind.wire import TaskEnvelope
    from ebind.worker.admission import RateAdmission

    app = _app("nats://127.0.0.1:1", "1000000/s")  # never connected: the path does no IO
    spec = app.registry.get("bench.unbound")
    assert spec is not None and spec.rate_limit is not None
    env = TaskEnvelope(id="t", name="bench.unbound")
    admission = RateAdmission(app, worker_id="bench", concurrency=256)
    best = float("inf")
    for _ in range(runs):
        admission._limits.clear()
        limit = admission._new_limit((spec.name, ""))
        # A block as large as the calls, all slots due now; counted as arriving an hour from
        # now so none goes stale during the run.
        now = time.time()
        limit.block.refill(Lease(now, calls + 1, 1e-9), now + 3600)
        start = time.perf_counter()
        for _ in range(calls):
            await admission.admit(None, env, spec, 1)
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


async def main() -> None:
    """Run the three kinds on one embedded node and print throughput, cost and KV ops."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--rate", default="500/s")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()
    from ebind.embed import start_node
    from ebind.logging import configure
    from ebind.worker import Worker

    configure(format="console", level="warning")
    node = start_node()
    best = {"free": 0.0, "unbound": 0.0, "bound": 0.0}
    ops = {"free": 0.0, "unbound": 0.0, "bound": 0.0}
    try:
        app = _app(node.client_url, args.rate)
        await app.connect()
        worker = Worker(app, scheduler=False, concurrency=args.concurrency)
        running = asyncio.create_task(worker.run())
        try:
            await worker.wait_ready()
            for kind in best:  # warm up each path once
                await _round(app, worker, f"bench.{kind}", 200)
            for _ in range(args.rounds):
                for kind in best:
                    rate, kv = await _round(app, worker, f"bench.{kind}", args.tasks)
                    print(f"{kind:8s} {rate:9.0f} tasks/s  {kv:.4f} KV ops/task")
                    if rate > best[kind]:
                        best[kind], ops[kind] = rate, kv
        finally:
            await worker.stop()
            await running
            await app.close()
    finally:
        node.shutdown()
    admit_us = await fast_path_us()
    print(f"admission with a leased token: {admit_us:.2f} µs per task (no IO)")
    cost_us = (1 / best["unbound"] - 1 / best["free"]) * 1e6
    ratio = best["unbound"] / best["free"]
    print(
        f"unbound limit: {ratio:.2f}x the throughput of no limit, "
        f"{cost_us:+.1f} µs per task, {ops['unbound']:.4f} KV ops per task"
    )
    print(
        f"bound limit {args.rate}: {best['bound']:.0f} tasks/s, {ops['bound']:.4f} KV ops per task"
    )
    summary = {
        "bench": "limits",
        "tasks": args.tasks,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "free_tasks_per_s": round(best["free"]),
        "unbound_tasks_per_s": round(best["unbound"]),
        "unbound_over_free": round(ratio, 3),
        "unbound_cost_us_per_task": round(cost_us, 1),
        "admit_fast_path_us": round(admit_us, 3),
        "unbound_kv_ops_per_task": round(ops["unbound"], 5),
        "bound_rate": args.rate,
        "bound_tasks_per_s": round(best["bound"]),
        "bound_kv_ops_per_task": round(ops["bound"], 5),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main())
