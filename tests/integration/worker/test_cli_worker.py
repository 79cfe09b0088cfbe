"""`ebind worker` as a real process: serving, SIGTERM drain, and SIGKILL redelivery."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from worker_helpers import read_ledger, running, spawn_cli_worker, wait_cli_ready, wait_for

from ebind.app import App
from ebind.cli import main

HERE = Path(__file__).parent
ROOT = HERE.parent.parent.parent


def test_cli_help_lists_worker_and_server() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    assert "worker" in result.output and "server" in result.output


def test_worker_help_shows_every_option() -> None:
    result = CliRunner().invoke(main, ["worker", "--help"])
    assert result.exit_code == 0, result.output
    for opt in (
        "-A",
        "--concurrency",
        "--claim",
        "--worker-id",
        "--nats",
        "--embedded",
        "--no-scheduler",
        "--ack-wait",
        "--health-port",
        "--health-host",
        "--shutdown-grace",
        "--log-format",
    ):
        assert opt in result.output


def test_worker_rejects_an_app_path_that_does_not_import() -> None:
    result = CliRunner().invoke(main, ["worker", "-A", "no_such_module_xyz:app"])
    assert result.exit_code != 0
    assert "cannot import module 'no_such_module_xyz'" in result.output


async def test_killed_worker_task_is_redelivered_and_completes_elsewhere(
    app: App,
    nats_url: str,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGKILL mid-task; the task runs again after ~ack_wait on another worker, once done."""
    import cli_app

    ledger = tmp_path / "ledger.jsonl"
    gate = tmp_path / "gate"
    monkeypatch.setenv("EBIND_TEST_LEDGER", str(ledger))  # for the in-process second worker
    w1 = spawn_cli_worker(nats_url, ledger, "--worker-id", "W1", "--ack-wait", "1", "-c", "2")
    procs.append(w1)
    wait_cli_ready(w1)
    producer = App("producer", nats_url=nats_url)
    producer.registry.register(cli_app.barrier.spec)
    await producer.connect()
    try:
        fut = await producer.enqueue("cli.barrier", str(gate))
        await wait_for(lambda: any(e["phase"] == "start" for e in read_ledger(ledger)), 20)
        os.kill(w1.pid, signal.SIGKILL)
        w1.wait(10)
        gate.touch()
        app.registry.register(cli_app.barrier.spec)
        async with running(app, worker_id="W2", ack_wait=1.0):
            assert await fut.result(20) == "W2"
    finally:
        await producer.close()
    entries = [e for e in read_ledger(ledger) if e["task_id"] == fut.id]
    starts = [(e["worker_id"], e["attempt"]) for e in entries if e["phase"] == "start"]
    ends = [(e["worker_id"], e["attempt"]) for e in entries if e["phase"] == "end"]
    assert starts == [("W1", 1), ("W2", 2)]
    assert ends == [("W2", 2)]


async def test_sigterm_stops_the_worker_process_gracefully(
    app: App, nats_url: str, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """SIGTERM: the in-flight task finishes and is acked, then the process exits 0."""
    import cli_app

    ledger = tmp_path / "ledger.jsonl"
    gate = tmp_path / "gate"
    w = spawn_cli_worker(nats_url, ledger, "--worker-id", "T1", "--shutdown-grace", "20")
    procs.append(w)
    wait_cli_ready(w)
    app.registry.register(cli_app.barrier.spec)
    fut = await app.enqueue("cli.barrier", str(gate))
    await wait_for(lambda: any(e["phase"] == "start" for e in read_ledger(ledger)), 20)
    w.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    assert w.poll() is None  # still draining
    gate.touch()
    assert await fut.result(20) == "T1"
    assert w.wait(20) == 0


async def test_worker_retention_options_override_the_apps_setting(
    nats_url: str, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    procs.append(spawn_cli_worker(nats_url, tmp_path / "ledger", "--retention-tasks", "2h"))
    wait_cli_ready(procs[-1])
    async with App("probe", nats_url=nats_url) as probe:
        info = await probe.js.stream_info("EBIND_TASKS")
    assert info.config.max_age == 2 * 3600 + 1800  # the worker's App created it so


async def test_worker_cli_runs_sync_handlers_in_a_process_pool(
    nats_url: str, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """--pool process: children answer, concurrency follows --pool-size, SIGTERM ends them."""
    import pool_app

    args = ("--pool", "process", "--pool-size", "2", "--max-tasks-per-child", "5")
    w = spawn_cli_worker(nats_url, tmp_path / "ledger.jsonl", *args, app_path="pool_app:app")
    procs.append(w)
    ready = wait_cli_ready(w, 60)
    assert ready[0]["concurrency"] == 2
    producer = App("producer", nats_url=nats_url)
    producer.registry.register(pool_app.spin.spec)
    await producer.connect()
    try:
        futs = [await producer.enqueue("pool.spin", 0.5) for _ in range(2)]
        got = [await f.result(30) for f in futs]
    finally:
        await producer.close()
    children = {int(g["pid"]) for g in got}
    assert len(children) == 2 and w.pid not in children
    os.kill(w.pid, signal.SIGTERM)
    assert w.wait(30) == 0
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_children_of_a_worker_killed_with_sigkill_do_not_outlive_it(
    nats_url: str, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """A handler blocked in a child dies with its worker instead of running on, orphaned."""
    import pool_app

    args = ("--pool", "process", "--processes", "1")
    w = spawn_cli_worker(nats_url, tmp_path / "ledger.jsonl", *args, app_path="pool_app:app")
    procs.append(w)
    wait_cli_ready(w, 60)
    pid_file = tmp_path / "child.pid"
    producer = App("producer", nats_url=nats_url)
    producer.registry.register(pool_app.wait.spec)
    await producer.connect()
    try:
        await producer.enqueue("pool.wait", str(pid_file))
        await wait_for(lambda: pid_file.exists() and pid_file.stat().st_size > 0, 20)
    finally:
        await producer.close()
    child = int(pid_file.read_text())
    os.kill(w.pid, signal.SIGKILL)
    w.wait(10)

    def child_gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        return False

    await wait_for(child_gone, 10)
