"""The client side every peer shares: arguments, the measured phases, one JSON line out.

Stdlib only, because each peer's client runs in that peer's own venv. A client module
builds two callables and hands them to ``measure``: ``batch(n)`` sends ``n`` no-op tasks the
way that project's users write it and returns when every result is in; ``one()`` is one
round trip with nothing else in flight.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from procstat import tree_cpu, tree_rss_mb

WARMUP = 100


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The client's command line, the same for every peer."""
    p = argparse.ArgumentParser()
    p.add_argument("--variant", default="")
    p.add_argument("--url", required=True, help="the broker (redis:// or nats://)")
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--latency", type=int, default=200)
    p.add_argument("--leaves", type=int, default=1000)
    p.add_argument("--worker-pids", default="", help="comma-separated; their trees are measured")
    p.add_argument("--server-pid", type=int, default=0)
    return p.parse_args(argv)


def pids(args: argparse.Namespace) -> list[int]:
    """The worker process ids given on the command line."""
    return [int(p) for p in args.worker_pids.split(",") if p]


def emit(row: dict[str, Any]) -> None:
    """The client's only stdout: one JSON object the driver reads."""
    sys.stdout.write(json.dumps(row) + "\n")
    sys.stdout.flush()


def measure(
    args: argparse.Namespace,
    batch: Callable[[int], None],
    one: Callable[[], None] | None,
) -> None:
    """Warm up, then time ``batch(args.tasks)`` (with worker and server CPU) and ``one()``."""
    workers = pids(args)
    server = [args.server_pid] if args.server_pid else []
    batch(WARMUP)  # imports, connections, consumers; also waits for the worker to be up
    rss = tree_rss_mb(workers)
    cpu0, scpu0 = tree_cpu(workers), tree_cpu(server)
    t0 = time.perf_counter()
    batch(args.tasks)
    elapsed = time.perf_counter() - t0
    cpu, scpu = tree_cpu(workers) - cpu0, tree_cpu(server) - scpu0
    row: dict[str, Any] = {
        "tasks_per_s": args.tasks / elapsed,
        "cpu_us_per_task": cpu / args.tasks * 1e6,
        "server_cpu_us_per_task": scpu / args.tasks * 1e6 if server else None,
        "worker_rss_mb": rss,
        "p50_ms": None,
    }
    if one is not None:
        samples = []
        for _ in range(args.latency):
            s = time.perf_counter()
            one()
            samples.append((time.perf_counter() - s) * 1000)
        row["p50_ms"] = statistics.median(samples)
    emit(row)


def measure_dag(args: argparse.Namespace, run: Callable[[int], float]) -> None:
    """Time one fan-out of ``args.leaves`` no-ops into a fan-in step, after a small warm-up.

    ``run(leaves)`` returns the seconds its submit took; the whole is timed here.
    """
    workers = pids(args)
    run(10)
    cpu0 = tree_cpu(workers)
    t0 = time.perf_counter()
    submit = run(args.leaves)
    elapsed = time.perf_counter() - t0
    emit(
        {
            "seconds": elapsed,
            "submit_s": submit,
            "cpu_us_per_task": (tree_cpu(workers) - cpu0) / (args.leaves + 1) * 1e6,
        }
    )
