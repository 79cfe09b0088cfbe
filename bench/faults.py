"""Recovery times after injected faults, for the table in docs/reliability.md.

Each scenario runs three times on a fresh embedded node (file storage, fsync on every write)
with two ``ebind worker`` processes (``--ack-wait 2``, a 2 s scheduler lease) and reports the
median seconds from the fault until the work it hit is done:

- ``worker_sigkill``: the worker running a task is SIGKILLed; the other one redelivers it.
- ``worker_sigstop``: the worker running a task is frozen (SIGSTOP) for 10 s.
- ``crashpoint``: a worker dies at ``worker.after_handler`` (handler ran, nothing recorded).
- ``server_sigkill``: the server is SIGKILLed and restarted 0.5 s later; time from the
  restart until a task enqueued then (retried with the same id until confirmed) has its
  result.
- ``leader_sigkill``: the scheduler leader is SIGKILLed; time until a DAG submitted right
  after the kill has finished.

Usage: ``python bench/faults.py [--repeat 3]``. The last line printed is one JSON object.
Also importable as the App the worker processes serve (``ebind worker -A faults:app``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ebind.app import App  # noqa: E402
from ebind.context import Context  # noqa: E402

ACK_WAIT = 2.0
LEASE_TTL = 2.0


class FaultApp(App):
    """An App whose scheduler lease and sweep are sized for a short measurement."""

    async def connect(self) -> None:
        """Connect, then configure the workflow with a short lease and sweep interval."""
        fresh = self._nc is None
        await super().connect()
        if fresh:
            from ebind.workflow.leader import KVLeaseElector

            self.configure_workflow(
                sweep_interval=0.5,
                redispatch_after=3.0,
                elector=KVLeaseElector(self.js, ttl=LEASE_TTL),
            )


app = FaultApp("faults")


@app.task(name="faults.hold")
async def hold(ctx: Context, seconds: float) -> str:
    """Sleep ``seconds`` and return this process's pid (so the bench knows who ran it)."""
    marker = os.environ.get("EBIND_BENCH_MARKER")
    if marker:
        await asyncio.to_thread(Path(marker).write_text, str(os.getpid()))
    await asyncio.sleep(seconds)
    return str(os.getpid())


@app.task(name="faults.inc")
async def inc(x: int) -> int:
    """Return ``x + 1``."""
    return x + 1


class Workers:
    """``ebind worker`` processes serving this module, stopped by PID."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url, self.tmp = url, tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, crashpoint: str = "") -> subprocess.Popen[bytes]:
        """Start one worker and wait until it is ready."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
        env["EBIND_BENCH_MARKER"] = str(self.tmp / f"{name}.pid")
        env.pop("EBIND_CRASHPOINT", None)
        if crashpoint:
            env["EBIND_CRASHPOINT"] = crashpoint
        log = (self.tmp / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ebind",
                "worker",
                "-A",
                "faults:app",
                "--nats",
                self.url,
                "--ack-wait",
                str(ACK_WAIT),
                "--log-format",
                "json",
                "--worker-id",
                name,
            ],
            cwd=HERE,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        self.procs.append(proc)
        deadline = time.monotonic() + 30
        while b"worker.ready" not in (self.tmp / f"{name}.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start")
            time.sleep(0.05)
        return proc

    def leader(self) -> subprocess.Popen[bytes] | None:
        """The live worker whose log last says it holds the scheduler lease."""
        for proc, name in zip(self.procs, self._names(), strict=True):
            if proc.poll() is not None:
                continue
            events = [
                json.loads(line).get("event")
                for line in (self.tmp / f"{name}.log").read_text().splitlines()
                if '"leader.' in line
            ]
            if events and events[-1] == "leader.acquired":
                return proc
        return None

    def _names(self) -> list[str]:
        return [p.args[p.args.index("--worker-id") + 1] for p in self.procs]  # type: ignore[union-attr]

    def stop(self) -> None:
        """SIGKILL every worker started here."""
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                os.kill(p.pid, signal.SIGKILL)
            p.wait(10)


Scenario = Callable[[Any, App, Workers], Awaitable[float]]


async def _running_on(app_: App, workers: Workers) -> tuple[Any, subprocess.Popen[bytes]]:
    fut = await app_.enqueue("faults.hold", 1.0)
    for _ in range(200):
        for proc, name in zip(workers.procs, workers._names(), strict=True):
            marker = workers.tmp / f"{name}.pid"
            if proc.poll() is None and marker.exists() and marker.read_text() == str(proc.pid):
                marker.unlink()
                return fut, proc
        await asyncio.sleep(0.02)
    raise RuntimeError("the task did not start")


async def worker_sigkill(node: Any, app_: App, workers: Workers) -> float:
    fut, proc = await _running_on(app_, workers)
    t0 = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    await fut.result(timeout=60)
    return time.monotonic() - t0


async def worker_sigstop(node: Any, app_: App, workers: Workers) -> float:
    fut, proc = await _running_on(app_, workers)
    t0 = time.monotonic()
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        await fut.result(timeout=60)
        return time.monotonic() - t0
    finally:
        os.kill(proc.pid, signal.SIGCONT)


async def crashpoint(node: Any, app_: App, workers: Workers) -> float:
    for p in workers.procs:
        os.kill(p.pid, signal.SIGKILL)
    doomed = workers.start("armed", "worker.after_handler")
    fut = await app_.enqueue("faults.inc", 1)
    await asyncio.to_thread(doomed.wait, 30)
    t0 = time.monotonic()
    workers.start("spare")
    await fut.result(timeout=60)
    return time.monotonic() - t0


async def server_sigkill(node: Any, app_: App, workers: Workers) -> float:
    from ebind.errors import PublishFailed

    node.kill()
    await asyncio.sleep(0.5)
    node.restart()
    t0 = time.monotonic()
    while True:  # what a careful producer does: retry with the same id (deduplicated)
        try:
            fut = await app_.apply_async("faults.inc", (1,), task_id="after-restart")
            break
        except PublishFailed:
            continue
    await fut.result(timeout=60)
    return time.monotonic() - t0


async def leader_sigkill(node: Any, app_: App, workers: Workers) -> float:
    from ebind.workflow import DAG

    for _ in range(100):
        leader = workers.leader()
        if leader is not None:
            break
        await asyncio.sleep(0.1)
    else:
        raise RuntimeError("no scheduler leader")
    os.kill(leader.pid, signal.SIGKILL)
    t0 = time.monotonic()
    dag = DAG()
    a = dag.step("a", "faults.inc", 0)
    dag.step("b", "faults.inc", a.ref())
    await dag.submit(app_.workflow)
    await app_.workflow.wait(dag.id, timeout=60)
    return time.monotonic() - t0


SCENARIOS: dict[str, Scenario] = {
    "worker_sigkill": worker_sigkill,
    "worker_sigstop": worker_sigstop,
    "crashpoint": crashpoint,
    "server_sigkill": server_sigkill,
    "leader_sigkill": leader_sigkill,
}


async def _once(scenario: Scenario) -> float:
    from ebind.embed import start_node

    with tempfile.TemporaryDirectory() as tmp:
        node = start_node(store_dir=Path(tmp) / "store")
        workers = Workers(node.client_url, Path(tmp))
        client = FaultApp(
            "faults", nats_url=node.client_url, reconnect_time_wait=0.1, max_reconnect_attempts=-1
        )
        client.registry = app.registry
        try:
            workers.start("w1")
            workers.start("w2")
            await client.connect()
            return await scenario(node, client, workers)
        finally:
            workers.stop()
            await client.close()
            node.shutdown()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    report: dict[str, float] = {}
    for name, scenario in SCENARIOS.items():
        times = [await _once(scenario) for _ in range(args.repeat)]
        report[name] = round(statistics.median(times), 2)
        print(f"{name:16s} median {report[name]:6.2f} s  runs {[round(t, 2) for t in times]}")
    print(json.dumps({"recovery_seconds": report, "ack_wait": ACK_WAIT, "lease_ttl": LEASE_TTL}))


if __name__ == "__main__":
    asyncio.run(main())
