"""Cost per task of a concurrency key: the same no-op task with and without a limit.

On one embedded node, one in-process worker (concurrency 16) runs ``--tasks`` no-op tasks,
all enqueued first, then collected:

1. ``plain``: no limit (the floor, measured in the same run);
2. ``keyed``: ``concurrency=1000`` with a key per call, so no task ever waits and the
   difference is the slot lease itself (a conditional write, then its delete marker);
3. ``contended``: ``concurrency=4`` on one key, so most tasks find every slot taken.

The variants take turns for ``--rounds`` rounds and each keeps its best round. The last
line printed is one JSON object with tasks/s, the ratio to the floor and µs added per task.

Usage: ``python bench/concurrency.py [--tasks 2000] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ebind.app import App  # noqa: E402
from ebind.limits.concurrency_rules import Concurrency  # noqa: E402

VARIANTS = ("plain", "keyed", "contended")


def _app(url: str) -> App:
    app = App("bench-conc", nats_url=url)

    @app.task(name="bench.plain")
    async def plain(n: int) -> int:
        return n

    @app.task(name="bench.keyed", concurrency=1000, concurrency_key="n")
    async def keyed(n: int) -> int:
        return n

    @app.task(name="bench.contended", concurrency=Concurrency(limit=4, hold=5.0))
    async def contended(n: int) -> int:
        return n

    return app


async def _run(url: str, variant: str, tasks: int) -> float:
    from ebind.worker import Worker

    app = _app(url)
    await app.connect()
    w = Worker(app, scheduler=False, concurrency=16)
    running = asyncio.create_task(w.run())
    try:
        await w.wait_ready()
        name = f"bench.{variant}"
        await (await app.enqueue(name, -1)).result(60)  # warm up
        start = time.perf_counter()
        futs = [await app.enqueue(name, n) for n in range(tasks)]
        for fut in futs:
            await fut.result(600)
        return tasks / (time.perf_counter() - start)
    finally:
        await w.stop()
        await running
        await app.close()


async def main() -> None:
    """Run the variants in turns on one embedded node and print their throughput."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from ebind.embed import start_node
    from ebind.logging import configure

    configure(format="console", level="warning")
    best = dict.fromkeys(VARIANTS, 0.0)
    node = start_node()
    try:
        for _ in range(args.rounds):
            for variant in VARIANTS:
                got = await _run(node.client_url, variant, args.tasks)
                print(f"concurrency key  {variant:9s}: {got:8.1f} tasks/s")
                best[variant] = max(best[variant], got)
    finally:
        node.shutdown()
    floor = best["plain"]
    summary: dict[str, object] = {
        "bench": "concurrency",
        "tasks": args.tasks,
        "rounds": args.rounds,
    }
    for variant in VARIANTS:
        rate = best[variant]
        summary[f"{variant}_tasks_per_s"] = round(rate, 1)
        summary[f"{variant}_vs_plain"] = round(rate / floor, 3)
        summary[f"{variant}_added_us_per_task"] = round((1 / rate - 1 / floor) * 1e6, 1)
    print(
        f"keyed / plain: {best['keyed'] / floor:.2f}x, "
        f"{summary['keyed_added_us_per_task']} µs added per task"
    )
    summary["load_avg_1m"] = round(os.getloadavg()[0], 2)  # shared cores: context for the ratio
    summary["cpus"] = os.cpu_count()
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main())
