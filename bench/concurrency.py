"""Cost per task of a concurrency key: the same no-op task with and without a limit.

On one embedded node, one in-process worker (concurrency 16) runs ``--tasks`` no-op tasks,
all enqueued first, then collected:

1. ``plain``: no limit (the floor, measured in the same run);
2. ``keyed``: ``concurrency=1000`` with a key per call, so no task ever waits and the
   difference is the slot lease itself (a conditional write, then its delete marker);
3. ``contended``: ``concurrency=4`` on one key, so most tasks find every slot taken.

The variants take turns for ``--rounds`` rounds and each keeps its best round. Beside
throughput (which other jobs on the machine move a lot), each reports the CPU time per task
of this process (producer and worker) and of the server, which load moves far less; the
difference to ``plain`` is what a concurrency key costs. The last line printed is one JSON
object.

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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for entry in (str(ROOT), str(HERE)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from tasks import _cpu_seconds  # noqa: E402

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


async def _run(url: str, server_pid: int, variant: str, tasks: int) -> tuple[float, float, float]:
    """(tasks/s, this process's CPU µs per task, the server's CPU µs per task)."""
    from ebind.worker import Worker

    app = _app(url)
    await app.connect()
    w = Worker(app, scheduler=False, concurrency=16)
    running = asyncio.create_task(w.run())
    try:
        await w.wait_ready()
        name = f"bench.{variant}"
        await (await app.enqueue(name, -1)).result(60)  # warm up
        start, cpu, server = time.perf_counter(), time.process_time(), _cpu_seconds(server_pid)
        futs = [await app.enqueue(name, n) for n in range(tasks)]
        for fut in futs:
            await fut.result(600)
        rate = tasks / (time.perf_counter() - start)
        per_task = 1e6 / tasks
        server_us = (_cpu_seconds(server_pid) - server) * per_task
        return rate, (time.process_time() - cpu) * per_task, server_us
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
    cpu = dict.fromkeys(VARIANTS, float("inf"))
    server = dict.fromkeys(VARIANTS, float("inf"))
    node = start_node()
    try:
        assert node.pid is not None
        for _ in range(args.rounds):
            for variant in VARIANTS:
                got, us, server_us = await _run(node.client_url, node.pid, variant, args.tasks)
                print(
                    f"concurrency key  {variant:9s}: {got:8.1f} tasks/s, CPU per task "
                    f"{us:6.0f} µs here + {server_us:5.0f} µs in the server"
                )
                best[variant] = max(best[variant], got)
                cpu[variant] = min(cpu[variant], us)
                server[variant] = min(server[variant], server_us)
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
        summary[f"{variant}_cpu_us_per_task"] = round(cpu[variant], 1)
        summary[f"{variant}_server_cpu_us_per_task"] = round(server[variant], 1)
    added_cpu = cpu["keyed"] - cpu["plain"]
    added_server = server["keyed"] - server["plain"]
    summary["keyed_added_cpu_us_per_task"] = round(added_cpu, 1)
    summary["keyed_added_server_cpu_us_per_task"] = round(added_server, 1)
    print(
        f"keyed / plain: {best['keyed'] / floor:.2f}x throughput; a key adds "
        f"{added_cpu:.0f} µs CPU here and {added_server:.0f} µs in the server per task"
    )
    summary["load_avg_1m"] = round(os.getloadavg()[0], 2)  # shared cores: context for the ratio
    summary["cpus"] = os.cpu_count()
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main())
