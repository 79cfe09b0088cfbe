"""Helpers shared by the process and memory benchmarks: a worker command, pipelined load.

``run_noops`` enqueues no-op tasks the way ``bench/tasks.py`` does (``LANES`` publishes in
flight, every PubAck checked) and waits for every result; ``tree_cpu`` reads the CPU time
of a process and its children from ``/proc``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tasks import HERE, LANES, _cpu_seconds, _spawn, _stop

__all__ = ["children", "cluster_app", "run_noops", "tree_cpu", "worker"]


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s children."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its living children."""
    return sum(_cpu_seconds(p) for p in [pid, *children(pid)])


async def run_noops(app: Any, n: int) -> None:
    """Enqueue ``n`` bench.noop tasks on ``LANES`` concurrent lanes and await every result."""
    futs: list[Any] = []

    async def lane(count: int) -> None:
        for _ in range(count):
            futs.append(await app.enqueue("bench.noop"))

    await asyncio.gather(*[lane(n // LANES + (i < n % LANES)) for i in range(LANES)])
    await asyncio.gather(*[f.result(60) for f in futs])


@contextmanager
def worker(
    url: str, *args: str, ready: int = 1, timeout: float = 60.0, app: str = "tasks:app"
) -> Iterator[Any]:
    """``ebind worker -A app`` (warning-level JSON logs) until ``ready`` report ready."""
    cmd = [sys.executable, "-m", "ebind", "worker", "-A", app, "--nats", url]
    cmd += ["--log-format", "json", "--log-level", "warning", *args]
    log_path = Path(tempfile.mkstemp(prefix="ebind-bench-worker-", suffix=".log")[1])
    proc = _spawn(cmd, log_path, cwd=HERE)
    try:
        deadline = time.monotonic() + timeout
        while log_path.read_bytes().count(b" ready\n") < ready:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready: {log_path.read_text(errors='replace')}")
            time.sleep(0.05)
        yield proc
    finally:
        _stop(proc)
        log_path.unlink()


def _cluster_app() -> Any:
    from tasks import noop

    from ebind.app import App

    app = App("bench", replicas=3)  # every stream and bucket on all three nodes
    app.registry.register(noop.spec)
    return app


cluster_app = _cluster_app()
"""The bench App with replicated streams, served as ``-A load:cluster_app``."""
