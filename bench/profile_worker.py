"""Flame graph of an ``ebind worker`` process while a producer drives it (py-spy).

Starts an embedded node (NATS default sync) and ``ebind worker -c 16``, warms it up, then
attaches ``py-spy record`` to the worker (so start-up imports stay out of the picture) while
the producer runs one workload: ``loop`` (``await t.delay()`` one call after another) or
``batch`` (``await t.starmap(...)``), and waits for every result. Writes an SVG flame graph,
or with ``--raw`` the collapsed stacks (one ``frame;frame;... count`` line per stack).

Usage: ``python bench/profile_worker.py loop docs/profiles/worker-loop-c16.svg [--tasks N]``.
py-spy comes with the ``dev`` extra; attaching needs ptrace rights (root, or
``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from itertools import repeat
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from tasks import ROOT, _run, _spawn, _stop, _wait_line, noop  # noqa: E402

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ebind.app import App  # noqa: E402
from ebind.embed import start_node  # noqa: E402
from ebind.task import Task  # noqa: E402


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: pip install -e '.[dev]'")
    return found


async def _profile(mode: str, n: int, out: Path, concurrency: int, raw: bool) -> float:
    with tempfile.TemporaryDirectory(prefix="ebind-profile-") as store:
        node = start_node(store_dir=store, sync_interval="default")
        producer = App("bench-profile", nats_url=node.client_url, publish_timeout=30.0)
        task: Task[[], None] = Task(producer, noop.spec)
        await producer.connect()
        cmd = [sys.executable, "-m", "ebind", "worker", "-A", "tasks:app"]
        cmd += ["--nats", node.client_url, "--no-scheduler", "-c", str(concurrency)]
        cmd += ["--log-format", "json", "--log-level", "warning"]
        log_path = Path(tempfile.mkstemp(prefix="ebind-profile-", suffix=".log")[1])
        worker = _spawn(cmd, log_path, cwd=HERE)
        spy: asyncio.subprocess.Process | None = None
        try:
            _wait_line(worker, log_path, b" ready")
            for fut in await task.starmap(repeat((), 300)):  # warm up before attaching
                await fut.result(10)
            spy_cmd = [_py_spy(), "record", "-r", "400", "-o", str(out), "-p", str(worker.pid)]
            spy = await asyncio.create_subprocess_exec(*spy_cmd, *(["-f", "raw"] if raw else []))
            await asyncio.sleep(1.0)  # py-spy attached and sampling
            t0 = time.perf_counter()
            if mode == "loop":
                futs = [await task.delay() for _ in range(n)]
            else:
                futs = await task.starmap(repeat((), n))
            for fut in futs:
                await fut.result(60)
            rate = n / (time.perf_counter() - t0)
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
            await asyncio.wait_for(spy.wait(), 60)
        finally:
            if spy is not None and spy.returncode is None:
                spy.kill()
            _stop(worker)
            os.unlink(log_path)
            await producer.close()
            node.shutdown()
    return rate


def main() -> None:
    """Profile one workload and write the flame graph."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("loop", "batch"))
    parser.add_argument("out", type=Path)
    parser.add_argument("--tasks", type=int, default=0, help="default: 6000 loop, 20000 batch")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--raw", action="store_true", help="collapsed stacks instead of SVG")
    args = parser.parse_args()
    n = args.tasks or (6000 if args.mode == "loop" else 20_000)
    rate = _run(_profile(args.mode, n, args.out.resolve(), args.concurrency, args.raw))
    print(f"{args.mode}: {n} tasks at {rate:.0f} tasks/s (under the profiler) -> {args.out}")


if __name__ == "__main__":
    main()
