"""A worker SIGKILLed at each named crash point: the task still ends with one recorded outcome.

The worker runs as a real ``ebind worker`` process with ``EBIND_CRASHPOINT`` set; once it has
died at the point, a second worker without it takes over after ``ack_wait``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ebind.app import App
from ebind.errors import TaskFailed
from ebind.streams import RESP_STREAM

HERE = Path(__file__).parent
ROOT = HERE.parent.parent.parent
ACK_WAIT = "1.5"


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[tuple[Path, object]]:
    """Start ``ebind worker`` processes (stopped by PID afterwards) sharing one ledger file."""
    ledger = tmp_path / "ledger.jsonl"
    started: list[subprocess.Popen[bytes]] = []

    def start(
        nats_url: str, crashpoint: str = "", *, scheduler: bool = False
    ) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
        env["EBIND_TEST_LEDGER"] = str(ledger)
        env.pop("EBIND_CRASHPOINT", None)
        if crashpoint:
            env["EBIND_CRASHPOINT"] = crashpoint
        cmd = [sys.executable, "-m", "ebind", "worker", "-A", "crash_app:app", "--nats", nats_url]
        cmd += ["--ack-wait", ACK_WAIT, "--log-format", "json"]
        if not scheduler:
            cmd.append("--no-scheduler")
        proc = subprocess.Popen(
            cmd,
            cwd=HERE,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        started.append(proc)
        _wait_ready(proc)
        return proc

    try:
        yield ledger, start
    finally:
        for p in started:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
            p.wait(10)


def _wait_ready(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    deadline, buf = time.monotonic() + timeout, b""
    while time.monotonic() < deadline:
        buf += proc.stdout.read() or b""
        if b'"worker.ready"' in buf:
            return
        if proc.poll() is not None:
            raise AssertionError(
                f"worker exited {proc.returncode}:\n{buf.decode(errors='replace')}"
            )
        time.sleep(0.05)
    raise AssertionError(f"worker not ready:\n{buf.decode(errors='replace')}")


def _died_at(proc: subprocess.Popen[bytes], point: str, timeout: float = 20.0) -> None:
    assert proc.wait(timeout) == -signal.SIGKILL
    assert proc.stdout is not None
    out = proc.stdout.read() or b""
    assert f"crash point {point} reached".encode() in out


def _runs(ledger: Path) -> list[dict[str, object]]:
    if not ledger.exists():
        return []
    return [json.loads(line) for line in ledger.read_text().splitlines() if line]


@pytest.fixture
async def producer(nats_url: str) -> AsyncIterator[App]:
    """A connected App that knows the crash app's tasks."""
    from crash_app import app as crash_app

    app = App("crashtest", nats_url=nats_url)
    app.registry = crash_app.registry
    await app.connect()
    try:
        yield app
    finally:
        await app.close()


async def _stored_responses(app: App, task_id: str) -> int:
    info = await app.js.stream_info(RESP_STREAM, subjects_filter=f"RESP.{app.client_id}.>")
    return sum(n for s, n in (info.state.subjects or {}).items() if s.endswith(task_id))


@pytest.mark.parametrize(
    ("point", "task", "reruns"),
    [
        # Nothing was recorded: the redelivery runs the handler again (at-least-once), which
        # costs an attempt (with a one-attempt policy the waiter would get worker_lost).
        ("worker.after_handler", "cp.double", 2),
        # The response is stored: the redelivery finds it and neither runs nor answers again,
        # so even a one-attempt task is not charged for the crash.
        ("worker.after_response", "cp.once", 1),
    ],
)
async def test_a_worker_killed_around_a_success_still_gives_one_answer(
    nats_url: str,
    spawn: tuple[Path, object],
    producer: App,
    point: str,
    task: str,
    reruns: int,
) -> None:
    ledger, start = spawn
    doomed = start(nats_url, point)  # type: ignore[operator]
    fut = await producer.enqueue(task, 21)
    _died_at(doomed, point)
    start(nats_url)  # type: ignore[operator]
    assert await fut.result(timeout=30) == 42
    assert len(_runs(ledger)) == reruns
    assert await _stored_responses(producer, fut.id) == 1
    assert await producer.dlq.count() == 0


async def test_a_worker_killed_after_storing_a_dead_letter_leaves_one_entry_and_a_failure(
    nats_url: str, spawn: tuple[Path, object], producer: App
) -> None:
    ledger, start = spawn
    doomed = start(nats_url, "worker.after_dlq")  # type: ignore[operator]
    fut = await producer.enqueue("cp.fail", 7)
    _died_at(doomed, "worker.after_dlq")
    start(nats_url)  # type: ignore[operator]
    with pytest.raises(TaskFailed):
        await fut.result(timeout=30)
    assert len(_runs(ledger)) == 1  # the redelivery does not run the handler again
    entries = await producer.dlq.list()
    assert len(entries) == 1 and "bad input 7" in entries[0].entry.error.message
