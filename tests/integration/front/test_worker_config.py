"""App-level hooks, middleware and settings honoured by Worker and `ebind worker`; connect waits."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from refused_port import RefusedPort

from ebind.app import App
from ebind.context import Context
from ebind.embed import Node, start_node
from ebind.errors import ConnectionFailed
from ebind.wire import TaskEnvelope

HERE = Path(__file__).parent
ROOT = HERE.parent.parent.parent


def _env(ledger: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]),
        "FRONT_LEDGER": str(ledger),
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes the test starts, killed by PID afterwards."""
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
            p.wait(10)


def _cmd(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "ebind", "worker", "-A", "front_app:app", "--nats", url, *args]


def _worker(url: str, ledger: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _cmd(url, "--no-scheduler", "--log-level", "warning", *args),
        cwd=HERE,
        env=_env(ledger),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def _wait_line(path: Path, text: str, within: float = 20.0) -> list[str]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if any(text in line for line in lines):
            return lines
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in {path.read_text() if path.exists() else ''!r}")


async def test_worker_runs_app_hooks_and_middleware(nats_url: str) -> None:
    app = App("hooks-int", nats_url=nats_url)
    seen: list[str] = []

    @app.on_worker_startup
    async def up(worker: Any) -> None:
        seen.append(f"up {worker.worker_id == w_id}")

    @app.on_worker_shutdown
    def down(worker: Any) -> None:
        seen.append("down")

    def outer(next_handler: Any) -> Any:
        async def wrapped(ctx: Context, env: TaskEnvelope) -> bytes:
            seen.append(f"mw {env.name}")
            return await next_handler(ctx, env)

        return wrapped

    app.middleware.append(outer)

    @app.task(name="hooks.double")
    def double(x: int) -> int:
        return 2 * x

    w_id = "hooks-worker"
    async with app:
        w = app.worker(scheduler=False, ack_wait=2.0, shutdown_grace=2.0, worker_id=w_id)
        run = asyncio.create_task(w.run())
        await w.wait_ready()
        assert await (await double.delay(21)).result(timeout=10) == 42
        await w.stop()
        await run
    assert seen == ["up True", "mw hooks.double", "down"]


async def test_a_failing_startup_hook_stops_the_worker_before_it_takes_tasks(
    nats_url: str,
) -> None:
    app = App("hooks-fail", nats_url=nats_url)

    @app.on_worker_startup
    def broken(worker: Any) -> None:
        raise RuntimeError("database is down")

    @app.task(name="hooks.never")
    def never() -> None: ...

    async with app:
        await never.send()
        w = app.worker(scheduler=False)
        with pytest.raises(RuntimeError, match="database is down"):
            await asyncio.wait_for(w.run(), 10)
        info = await app.js.stream_info("EBIND_TASKS", subjects_filter="TASKS.hooks.never")
        assert info.state.messages == 1  # still queued: no consumer ever took it


def test_ebind_worker_honours_app_hooks_middleware_and_settings(
    nats_url: str, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    ledger = tmp_path / "ledger"
    proc = _worker(nats_url, ledger)
    procs.append(proc)
    _wait_line(ledger, "startup")

    async def send() -> int:
        async with App("front-client", nats_url=nats_url) as client:
            return int(await (await client.enqueue("front.add", 2, 3)).result(timeout=15))

    assert asyncio.run(send()) == 5
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    lines = _wait_line(ledger, "shutdown")
    # settings from config_from_object reach the worker; the flags left at their defaults
    assert lines[0] == "startup concurrency=3 grace=2"
    assert "middleware front.add" in lines
    assert lines[-1] == "shutdown"


def test_a_flag_given_wins_over_the_apps_setting(
    nats_url: str, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    ledger = tmp_path / "ledger"
    proc = _worker(nats_url, ledger, "--concurrency", "5")
    procs.append(proc)
    assert _wait_line(ledger, "startup")[0] == "startup concurrency=5 grace=2"


def test_unreachable_server_is_one_line_naming_the_url_and_a_failure_exit(
    tmp_path: Path, refused_port: RefusedPort
) -> None:
    url = f"nats://ann:hunter22@127.0.0.1:{refused_port.port}"
    started = time.monotonic()
    done = subprocess.run(
        _cmd(url, "--wait", "1"),
        cwd=HERE,
        env=_env(tmp_path / "ledger"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: cannot reach NATS at nats://ann:***@127.0.0.1:")
    assert "hunter22" not in done.stderr + done.stdout
    assert "gave up after 1s" in lines[0]
    assert time.monotonic() - started < 20


def test_wait_lets_the_worker_start_before_nats(
    tmp_path: Path, procs: list[subprocess.Popen[str]], refused_port: RefusedPort
) -> None:
    port = refused_port.port
    ledger = tmp_path / "ledger"
    proc = _worker(f"nats://127.0.0.1:{port}", ledger, "--wait", "30")
    procs.append(proc)
    time.sleep(1.5)  # the worker is retrying meanwhile
    assert proc.poll() is None
    refused_port.release()
    node: Node = start_node(port=port, store_dir=tmp_path / "store")
    try:
        _wait_line(ledger, "startup", within=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        node.shutdown()


async def test_async_with_app_is_bounded_against_an_unreachable_server(
    refused_port: RefusedPort,
) -> None:
    url = f"nats://127.0.0.1:{refused_port.port}"
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match=f"cannot reach NATS at {url}") as info:
        async with App("bounded", nats_url=url, connect_wait=1):
            pass
    assert info.value.kind == "unreachable"
    assert time.monotonic() - started < 6


def test_otel_flag_switches_on_the_tracing_middleware(
    nats_url: str, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    ledger = tmp_path / "ledger"
    proc = _worker(nats_url, ledger, "--otel")
    procs.append(proc)
    _wait_line(ledger, "startup")

    async def send() -> int:
        async with App("front-otel", nats_url=nats_url) as client:
            return int(await (await client.enqueue("front.add", 4, 5)).result(timeout=15))

    assert asyncio.run(send()) == 9


async def test_after_a_waited_connect_errors_reach_the_callers_callback(nats_url: str) -> None:
    from ebind.connection import open_connection

    seen: list[str] = []

    async def error_cb(exc: Exception) -> None:
        seen.append(str(exc))

    nc = await open_connection([nats_url], {"error_cb": error_cb}, wait=5)
    try:
        await nc._error_cb(RuntimeError("slow consumer"))  # what nats-py calls on an error
    finally:
        await nc.close()
    assert seen == ["slow consumer"]
