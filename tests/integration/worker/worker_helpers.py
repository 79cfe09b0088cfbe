"""Helpers for worker integration tests: run a Worker, poll, read the DLQ and streams."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from ebind.app import App
from ebind.queues import lane_durable
from ebind.streams import DLQ_STREAM, TASKS_STREAM
from ebind.wire import DLQEntry
from ebind.worker import Worker

HERE = Path(__file__).parent
ROOT = HERE.parent.parent.parent


def spawn_cli_worker(
    nats_url: str,
    ledger: Path,
    *args: str,
    app_path: str = "cli_app:app",
    scheduler: bool = False,
) -> subprocess.Popen[bytes]:
    """``python -m ebind worker`` for an app in this directory, output (JSON logs) piped."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]),
        "EBIND_TEST_LEDGER": str(ledger),
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [sys.executable, "-m", "ebind", "worker", "-A", app_path, "--nats", nats_url]
    return subprocess.Popen(
        [*cmd, *([] if scheduler else ["--no-scheduler"]), "--log-format", "json", *args],
        cwd=HERE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def child_pids(pid: int) -> list[int]:
    """The pids of ``pid``'s children (none once it has exited)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(p) for p in text.split()]


def read_ledger(path: Path) -> list[dict[str, object]]:
    """The effect ledger the CLI test apps write, one JSON object a line."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


class ProcOutput:
    """The output lines of a spawned worker, read without blocking and kept across calls."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        self.proc = proc
        self.seen: list[bytes] = []
        self._partial = b""

    def lines(self) -> list[bytes]:
        """Every complete line so far."""
        assert self.proc.stdout is not None
        data = self._partial + (self.proc.stdout.read() or b"")
        *done, self._partial = data.split(b"\n")
        self.seen.extend(done)
        return self.seen

    def events(self, event: str) -> list[dict[str, object]]:
        """The JSON log lines of ``event`` so far."""
        marker = f'"{event}"'.encode()
        return [json.loads(line) for line in self.lines() if marker in line]

    def wait(self, event: str, count: int = 1, timeout: float = 20.0) -> list[dict[str, object]]:
        """Wait until ``event`` was logged ``count`` times in all; those log lines."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(event)
            if len(found) >= count:
                return found
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.text()}")
            time.sleep(0.05)
        raise AssertionError(f"no {count} x {event} within {timeout}s:\n{self.text()}")

    def exit_code(self, timeout: float = 20.0) -> int:
        """Wait for the process to exit; its code (its output in the failure if it does not)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout}s:\n{self.text()}") from None

    def text(self) -> str:
        """All output so far, for failure messages."""
        return b"\n".join(self.lines()).decode(errors="replace")


def wait_cli_ready(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> list[dict[str, object]]:
    """The first ``worker.ready`` log line of a freshly spawned ``proc``."""
    return ProcOutput(proc).wait("worker.ready", 1, timeout)[:1]


@contextlib.asynccontextmanager
async def running(app: App, **options: Any) -> AsyncIterator[Worker]:
    """Run a Worker for the block; stop it gracefully (bounded) afterwards."""
    options.setdefault("scheduler", False)
    options.setdefault("ack_wait", 2.0)
    options.setdefault("shutdown_grace", 5.0)
    w = Worker(app, **options)
    task = asyncio.create_task(w.run())
    try:
        # Ready, not merely set up: its first `worker ls` record is written in between.
        await wait_for(lambda: w.is_consuming or task.done(), 10)
        if task.done():
            task.result()
        yield w
    finally:
        await w.stop()
        try:
            await asyncio.wait_for(task, 15)
        except BaseException:
            task.cancel()
            raise


async def wait_for(cond: Callable[[], bool | Awaitable[bool]], within: float = 10.0) -> None:
    """Poll ``cond`` until true; fail the test after ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = cond()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.02)


async def dlq_entries(app: App, name: str) -> list[DLQEntry]:
    """Every dead letter stored for task ``name`` (read with direct gets, no consumer)."""
    info = await app.js.stream_info(DLQ_STREAM, subjects_filter=f"DLQ.{name}")
    out: list[DLQEntry] = []
    if not info.state.messages:
        return out
    seq = info.state.first_seq
    while seq <= info.state.last_seq:
        with contextlib.suppress(Exception):
            raw = await app.js.get_msg(DLQ_STREAM, seq)
            if raw.subject == f"DLQ.{name}":
                out.append(msgspec.json.decode(raw.data, type=DLQEntry))
        seq += 1
    return out


async def tasks_pending(app: App) -> int:
    """Messages still stored in EBIND_TASKS."""
    info = await app.js.stream_info(TASKS_STREAM)
    return int(info.state.messages)


async def worker_consumer(app: App, name: str) -> Any:
    """ConsumerInfo of the durable of task ``name`` (default queue, normal band)."""
    return await app.js.consumer_info(TASKS_STREAM, lane_durable(name))


async def tasks_empty(app: App) -> bool:
    """EBIND_TASKS holds nothing (acks/terms are applied by the server asynchronously)."""
    return await tasks_pending(app) == 0
