"""The loop users write: ``await t.delay()`` one call after another, and ``await t.starmap()``.

For each server setting (embedded node with ``sync_interval="always"`` and with the NATS
default) and each repetition (a fresh node and fresh consumer processes every time), four
rows in the same run:

- ``floor_loop``: raw nats-py, ``await js.publish(...)`` one PubAck at a time, a consumer
  process fetching, acking and replying on core NATS (the floor of ``bench/tasks.py``);
- ``floor_pipelined``: the same floor with ``publish_async`` (window 4000);
- ``ebind_loop``: ``futs.append(await t.delay())`` N times, then every result, against one
  ``ebind worker -c 16`` (the default a user runs);
- ``ebind_batch``: ``await t.starmap(...)`` (every publish pipelined, every PubAck checked),
  then every result, against the same worker.

Each row reports tasks/s end to end (first publish to last result), p50 with one task in
flight, and the consumer process's CPU µs per task (utime + stime from /proc). Every ebind
row runs right after its floor row (the worker idles meanwhile), so that load from other
processes on a shared machine hits both alike. One JSON line per row and repetition, then
one JSON line per setting with the median rows and the median over repetitions of the
ratios the targets name: ``loop_vs_floor_loop`` (>= 0.95), ``batch_vs_floor_pipelined``
(>= 0.5), the worker's CPU per task against the floor consumer's (<= 2; against the
pipelined floor's and the one-PubAck floor's) and ``p50_vs_floor`` (<= 1.2).

Usage: ``python bench/loop.py [--tasks 10000] [--latency 300] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from itertools import repeat
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from tasks import (  # noqa: E402
    ROOT,
    _cpu_seconds,
    _floor,
    _run,
    _spawn,
    _stop,
    _wait_line,
    noop,
)

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ebind.app import App  # noqa: E402
from ebind.task import Task  # noqa: E402

Row = dict[str, float]
CONCURRENCY = 16


async def _results(futs: list[Any]) -> None:
    for fut in futs:  # in order: the first ones are done by the time the last is published
        await fut.result(60)


async def _latency(task: Task[[], None], lat_n: int) -> float:
    lat: list[float] = []
    for _ in range(lat_n):
        s = time.perf_counter()
        await (await task.delay()).result(10)
        lat.append((time.perf_counter() - s) * 1000)
    return statistics.median(lat)


@contextlib.asynccontextmanager
async def _worker(url: str) -> AsyncIterator[tuple[Task[[], None], int]]:
    """A connected producer's handle on ``bench.noop`` and the pid of an ``ebind worker``."""
    producer = App("bench-loop", nats_url=url, publish_timeout=30.0)
    task: Task[[], None] = Task(producer, noop.spec)
    await producer.connect()
    cmd = [sys.executable, "-m", "ebind", "worker", "-A", "tasks:app", "--nats", url]
    cmd += ["--no-scheduler", "-c", str(CONCURRENCY), "--log-format", "json"]
    cmd += ["--log-level", "warning"]
    log_path = Path(tempfile.mkstemp(prefix="ebind-bench-loop-", suffix=".log")[1])
    proc = _spawn(cmd, log_path, cwd=HERE)
    try:
        _wait_line(proc, log_path, b" ready")
        await _results(await task.starmap(repeat((), 200)))  # warm up outside the measurement
        yield task, proc.pid
    finally:
        _stop(proc)
        os.unlink(log_path)
        await producer.close()


async def _ebind_row(
    task: Task[[], None], pid: int, server_pid: int, n: int, batch: bool, p50: float
) -> Row:
    cpu0, scpu0, pcpu0 = _cpu_seconds(pid), _cpu_seconds(server_pid), time.process_time()
    t0 = time.perf_counter()
    if batch:
        futs = await task.starmap(repeat((), n))
    else:
        futs = [await task.delay() for _ in range(n)]
    await _results(futs)
    elapsed = time.perf_counter() - t0
    return {
        "tasks_per_s": n / elapsed,
        "p50_ms": p50,
        "cpu_us_per_task": (_cpu_seconds(pid) - cpu0) / n * 1e6,
        "producer_cpu_us_per_task": (time.process_time() - pcpu0) / n * 1e6,
        "server_cpu_us_per_task": (_cpu_seconds(server_pid) - scpu0) / n * 1e6,
    }


async def _one_run(sync: str, n: int, lat_n: int) -> dict[str, Row]:
    from ebind.embed import start_node

    with tempfile.TemporaryDirectory(prefix="ebind-bench-loop-") as store:
        node = start_node(store_dir=store, sync_interval=sync)
        try:
            url, spid = node.client_url, node.pid
            assert spid is not None
            async with _worker(url) as (task, pid):
                # Each ebind row right after its floor row: load from other processes on a
                # shared machine drifts within seconds, and the ratio compares neighbours.
                rows = {"floor_loop": await _floor(url, n, lat_n, pipelined=False, server_pid=spid)}
                p50 = await _latency(task, lat_n)
                rows["ebind_loop"] = await _ebind_row(task, pid, spid, n, False, p50)
                rows["floor_pipelined"] = await _floor(url, n, lat_n, server_pid=spid)
                rows["ebind_batch"] = await _ebind_row(task, pid, spid, n, True, p50)
        finally:
            node.shutdown()
    return rows


def _median_rows(runs: list[dict[str, Row]]) -> dict[str, Row]:
    return {
        name: {k: statistics.median(r[name][k] for r in runs) for k in runs[0][name]}
        for name in runs[0]
    }


def _ratios(m: dict[str, Row]) -> dict[str, float]:
    loop, batch = m["ebind_loop"], m["ebind_batch"]
    floor_loop, floor_pipe = m["floor_loop"], m["floor_pipelined"]
    return {
        "loop_vs_floor_loop": loop["tasks_per_s"] / floor_loop["tasks_per_s"],
        "batch_vs_floor_pipelined": batch["tasks_per_s"] / floor_pipe["tasks_per_s"],
        "loop_worker_cpu_vs_floor_loop": loop["cpu_us_per_task"] / floor_loop["cpu_us_per_task"],
        "batch_worker_cpu_vs_floor_pipelined": batch["cpu_us_per_task"]
        / floor_pipe["cpu_us_per_task"],
        "loop_worker_cpu_vs_floor_pipelined": loop["cpu_us_per_task"]
        / floor_pipe["cpu_us_per_task"],
        "p50_vs_floor": loop["p50_ms"] / floor_loop["p50_ms"],
    }


def main() -> None:
    """Run every setting ``--repeat`` times; print a JSON line per row, then the medians."""
    import ebind.logging

    ebind.logging.configure(level="warning")  # stderr; stdout holds the report
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--latency", type=int, default=300, help="sequential tasks for p50")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--settings", default="always,default")
    args = parser.parse_args()
    for sync in args.settings.split(","):
        runs: list[dict[str, Row]] = []
        for rep in range(args.repeat):
            rows = _run(_one_run(sync, args.tasks, args.latency))
            runs.append(rows)
            for name, row in rows.items():
                out = {k: round(v, 3) for k, v in row.items()}
                print(json.dumps({"setting": sync, "rep": rep, "row": name, **out}), flush=True)
        medians = _median_rows(runs)
        summary: dict[str, Any] = {"setting": sync, "median_of": len(runs), "tasks": args.tasks}
        summary["rows"] = {
            name: {k: round(v, 3) for k, v in row.items()} for name, row in medians.items()
        }
        # Ratios within each repetition (its rows ran back to back), then their median.
        per_rep = [_ratios(rows) for rows in runs]
        summary["ratios"] = {
            k: round(statistics.median(r[k] for r in per_rep), 3) for k in per_rep[0]
        }
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
