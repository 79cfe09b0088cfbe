"""Worker processes: ``ebind worker --processes 1`` and ``2`` beside the raw floor, per setting.

For each server setting (the NATS default and ``sync_interval="always"``), on one embedded
node: the raw nats-py floor of ``bench/tasks.py`` (pipelined publishes, one consumer
process that fetches, acks and replies), then no-op tasks end to end through
``ebind worker -c 16 --processes 1`` and ``--processes 2`` (the default concurrency a user
runs), enqueued on 1000 concurrent lanes with every PubAck checked. Each row is the median
of ``--reps`` runs, each on a fresh worker (the two worker rows in turns, so a slow spell
of a shared host hits both), and reports throughput, the worker's CPU per
task (every worker process summed, the supervisor included), the nats-server process's CPU
per task (read from ``/proc`` of its pid) and the producer's.

Flat CPU per task from one process to two means a second process costs nothing per task;
throughput then grows with cores until the producer, the server or the machine is the
limit (on a 2-core machine all three share the same two cores).

With ``--cluster``, one more row: one worker process against a 3-node cluster whose
streams and buckets have 3 replicas, with the server CPU per task summed over the nodes
and that of the busiest node (the one leading the task stream).

One JSON line per row, then one verdict line. Usage:
``python bench/processes.py [--tasks 10000] [--reps 3] [--settings default,always] [--cluster]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Any

from load import run_noops, tree_cpu, worker
from tasks import _cpu_seconds, _floor, _run, noop

from ebind.app import App

CONCURRENCY = 16
LATENCY = 20  # sequential tasks the floor row also runs (counted in its server CPU)


async def _ebind(
    url: str, servers: list[int], n: int, processes: int, replicas: int = 1
) -> dict[str, float]:
    app = App("bench-producer", nats_url=url, publish_timeout=30.0, replicas=replicas)
    app.registry.register(noop.spec)
    await app.connect()
    args = ("--no-scheduler", "-c", str(CONCURRENCY), "--processes", str(processes))
    served = "tasks:app" if replicas == 1 else "load:cluster_app"
    try:
        with worker(url, *args, ready=processes, app=served) as proc:
            await run_noops(app, 200 * processes)  # imports, first pulls: not measured
            cpu0, pcpu0 = tree_cpu(proc.pid), time.process_time()
            srv0 = [_cpu_seconds(pid) for pid in servers]
            t0 = time.perf_counter()
            await run_noops(app, n)
            elapsed = time.perf_counter() - t0
            per_node = [
                (_cpu_seconds(p) - s0) / n * 1e6 for p, s0 in zip(servers, srv0, strict=True)
            ]
            row = {
                "tasks_per_s": n / elapsed,
                "worker_cpu_us_per_task": (tree_cpu(proc.pid) - cpu0) / n * 1e6,
                "server_cpu_us_per_task": sum(per_node),
                "producer_cpu_us_per_task": (time.process_time() - pcpu0) / n * 1e6,
            }
            if len(servers) > 1:  # the busiest node holds the stream leaders
                row["busiest_node_cpu_us_per_task"] = max(per_node)
            return row
    finally:
        await app.close()


async def _floor_row(url: str, server_pid: int, n: int) -> dict[str, float]:
    srv0 = _cpu_seconds(server_pid)
    row = await _floor(url, n, LATENCY)
    return {
        "tasks_per_s": row["tasks_per_s"],
        "worker_cpu_us_per_task": row["cpu_us_per_task"],
        "server_cpu_us_per_task": (_cpu_seconds(server_pid) - srv0) / (n + LATENCY) * 1e6,
        "producer_cpu_us_per_task": row["producer_cpu_us_per_task"],
    }


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in runs), 1) for k in runs[0]}


def _setting(sync: str, n: int, reps: int) -> list[dict[str, Any]]:
    from ebind.embed import start_node

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ebind-bench-") as store:
        node = start_node(store_dir=store, sync_interval=sync)
        try:
            url, pid = node.client_url, node.pid
            assert pid is not None
            floor = _median([_run(_floor_row(url, pid, n)) for _ in range(reps)])
            rows.append({"system": "floor", "processes": 1, **floor})
            # In turns (1, 2, 1, 2, ...): a slow spell of a shared host hits both alike.
            runs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
            for _ in range(reps):
                for processes in runs:
                    runs[processes].append(_run(_ebind(url, [pid], n, processes)))
            for processes, samples in runs.items():
                row = _median(samples)
                row["throughput_of_floor"] = round(row["tasks_per_s"] / floor["tasks_per_s"], 3)
                row["cpu_of_floor"] = round(
                    row["worker_cpu_us_per_task"] / floor["worker_cpu_us_per_task"], 2
                )
                rows.append({"system": "ebind", "processes": processes, **row})
        finally:
            node.shutdown()
    return [{"bench": "processes", "sync": sync, "tasks": n, "reps": reps, **r} for r in rows]


def _cluster(sync: str, n: int, reps: int) -> dict[str, Any]:
    """ebind with one worker process against a 3-node cluster, every stream replicated 3x."""
    from ebind.embed import start_cluster

    with tempfile.TemporaryDirectory(prefix="ebind-bench-") as store:
        cluster = start_cluster(3, store_dir=store, sync_interval=sync)
        try:
            pids = [node.pid for node in cluster.nodes]
            assert all(pids)
            url = ",".join(cluster.client_urls)
            row = _median([_run(_ebind(url, pids, n, 1, replicas=3)) for _ in range(reps)])
        finally:
            cluster.shutdown()
    head = {"bench": "processes", "sync": sync, "tasks": n, "reps": reps, "system": "ebind"}
    return {**head, "processes": 1, "nodes": 3, "replicas": 3, **row}


def main() -> None:
    """Print one JSON line per row and a verdict line per setting."""
    import ebind.logging

    ebind.logging.configure(level="warning")  # stderr; stdout holds the report
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--settings", default="default,always")
    parser.add_argument(
        "--cluster", action="store_true", help="also a 3-node cluster row (first setting only)"
    )
    args = parser.parse_args()
    for sync in args.settings.split(","):
        rows = _setting(sync, args.tasks, args.reps)
        for row in rows:
            print(json.dumps(row), flush=True)
        one, two = (r for r in rows if r["system"] == "ebind")
        ratio = two["worker_cpu_us_per_task"] / one["worker_cpu_us_per_task"]
        verdict = {
            "bench": "processes",
            "sync": sync,
            "verdict": "flat" if ratio <= 1.15 else "grows",
            "cpu_per_task_2_over_1": round(ratio, 2),
            "throughput_2_over_1": round(two["tasks_per_s"] / one["tasks_per_s"], 2),
            "cores": _cores(),
        }
        print(json.dumps(verdict), flush=True)
    if args.cluster:
        first = args.settings.split(",")[0]
        print(json.dumps(_cluster(first, args.tasks, args.reps)), flush=True)


def _cores() -> int:
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
