"""Health endpoints of a running worker on real NATS: connection loss, stalls, stuck threads."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from worker_helpers import running, spawn_cli_worker, wait_for

from ebind.app import App
from ebind.embed import Node
from ebind.retry import RetryPolicy
from ebind.worker import Worker
from ebind.worker.health import HealthLimits, HealthServeError, serve_health

# Stall limits no CPU contention on a shared test machine reaches, for tests about other things.
RELAXED = HealthLimits(stall_limit=5.0, stall_window=5.0, live_limit=10.0)


def _get(url: str | urllib.request.Request) -> tuple[int, dict[str, Any]]:
    """Send ``url`` (blocking): status and decoded JSON body, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def get(url: str) -> tuple[int, dict[str, Any]]:
    return await asyncio.to_thread(_get, url)


def _url(worker: Worker, path: str) -> str:
    assert worker.health is not None
    return worker.health.url + path


async def test_readiness_follows_the_nats_connection_through_a_server_kill_and_restart(
    app: App, nats_node: Node
) -> None:
    @app.task(name="hl.echo")
    async def echo(x: int) -> int:
        return x

    async with running(app, health_port=0, health_limits=RELAXED) as worker:
        assert worker.health is not None and worker.health.host == "127.0.0.1"
        ready = _url(worker, "/readyz")
        await wait_for(lambda: worker.is_consuming)
        await asyncio.sleep(0.3)  # one probe tick after setup
        status, body = await get(ready)
        assert status == 200, body
        assert body["ready"] is True and body["reasons"] == []
        assert body["worker_id"] == worker.worker_id and body["stuck_threads"] == 0
        assert await get(_url(worker, "/livez")) == (200, {"live": True, "reasons": []})

        nats_node.kill()
        killed = time.monotonic()

        async def unready() -> bool:
            status, body = await get(ready)
            return status == 503 and "nats disconnected" in body["reasons"]

        await wait_for(unready, 5)
        assert time.monotonic() - killed < 2.0  # flips within a second or two
        status, body = await get(_url(worker, "/livez"))
        assert status == 200 and body["live"] is True  # the loop still answers

        nats_node.start()

        async def ready_again() -> bool:
            return (await get(ready))[0] == 200

        await wait_for(ready_again, 20)
        assert await (await echo.delay(7)).result(timeout=15) == 7  # and it takes tasks
    # The endpoint goes away with the worker.
    with pytest.raises(urllib.error.URLError):
        await get(ready)


async def test_livez_says_503_while_a_handler_blocks_the_loop_and_readyz_remembers_the_stall(
    app: App,
) -> None:
    @app.task(name="hl.block", retry=RetryPolicy.none())
    async def block(seconds: float) -> str:
        time.sleep(seconds)  # noqa: ASYNC251 - blocking the loop on purpose
        return "done"

    limits = HealthLimits(stall_limit=0.3, stall_window=1.5, live_limit=0.6)
    async with running(app, health_port=0, health_limits=limits) as worker:
        live, ready = _url(worker, "/livez"), _url(worker, "/readyz")
        seen: list[tuple[int, dict[str, Any]]] = []
        stop = threading.Event()

        def poll() -> None:  # a thread: the test's own loop is the one being blocked
            while not stop.is_set():
                seen.append(_get(live))
                time.sleep(0.1)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            fut = await block.delay(2.0)
            assert await fut.result(timeout=15) == "done"
        finally:
            stop.set()
            await asyncio.to_thread(poller.join, 5)
        blocked = [body for status, body in seen if status == 503]
        assert blocked, seen
        assert re.fullmatch(r"event loop not answering for \d+\.\d s", blocked[0]["reasons"][0])
        assert (await get(live))[0] == 200
        status, body = await get(ready)
        assert status == 503 and any("event loop stalled" in r for r in body["reasons"]), body
        assert body["loop_stall_ms"] >= 1000

        async def stall_forgotten() -> bool:
            return (await get(ready))[0] == 200

        await wait_for(stall_forgotten, 5)  # past the stall window


async def test_readyz_is_503_while_every_slot_is_held_by_a_stuck_sync_thread(app: App) -> None:
    release = threading.Event()

    @app.task(name="hl.stuck", timeout=0.2, retry=RetryPolicy.none())
    def stuck() -> None:
        release.wait(30)

    try:
        async with running(app, concurrency=1, health_port=0, health_limits=RELAXED) as worker:
            ready = _url(worker, "/readyz")
            await stuck.delay()
            await wait_for(lambda: worker.stuck_threads == 1)

            async def reports_stuck() -> bool:
                status, body = await get(ready)
                return status == 503 and body["stuck_threads"] == 1

            await wait_for(reports_stuck, 3)
            _, body = await get(ready)
            assert body["reasons"] == [
                "all 1 slots held by stuck sync threads (handlers running past their timeout)"
            ]
            release.set()
            await wait_for(lambda: worker.stuck_threads == 0)

            async def recovered() -> bool:
                return (await get(ready))[0] == 200

            await wait_for(recovered, 3)
    finally:
        release.set()


async def test_the_endpoint_answers_only_get_on_its_two_paths(app: App) -> None:
    async with running(app, health_port=0) as worker:
        assert worker.health is not None
        status, body = await get(_url(worker, "/metrics"))
        assert status == 404 and "use /livez or /readyz" in body["error"]
        req = urllib.request.Request(_url(worker, "/readyz"), method="POST", data=b"x")
        status, body = await asyncio.to_thread(_get, req)
        assert status == 405 and "method POST not allowed" in body["error"]
        # A client that never finishes its request does not hold the server up.
        reader, writer = await asyncio.open_connection("127.0.0.1", worker.health.port)
        writer.write(b"GET /livez HTTP/1.1\r\n")
        assert (await get(_url(worker, "/livez")))[0] == 200
        writer.close()
        del reader


async def test_a_taken_port_fails_with_an_error_naming_the_address(app: App) -> None:
    worker = Worker(app, scheduler=False)
    first = await serve_health(worker)
    try:
        with pytest.raises(
            HealthServeError, match=rf"cannot serve health checks on 127\.0\.0\.1:{first.port}"
        ):
            await serve_health(worker, port=first.port)
        # Not started: the endpoint answers, and says why the worker is not ready.
        await asyncio.sleep(0.3)
        status, body = await get(first.url + "/readyz")
        assert status == 503 and body["reasons"] == ["worker not running"]
    finally:
        await first.close()


def test_ebind_worker_health_port_serves_readyz_from_the_command_line(
    nats_url: str, tmp_path: Path
) -> None:
    proc = spawn_cli_worker(nats_url, tmp_path / "ledger", "--health-port", "0")
    try:
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        url, buf, deadline = None, b"", time.monotonic() + 30
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            buf += proc.stdout.read() or b""
            m = re.search(rb"health at (http://127\.0\.0\.1:\d+)/livez", buf)
            url = m.group(1).decode() if m else None
            time.sleep(0.05)
        assert url is not None, buf.decode(errors="replace")
        status, body = _get(url + "/readyz")
        deadline = time.monotonic() + 5
        while status != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
            status, body = _get(url + "/readyz")
        assert status == 200 and body["ready"] is True, body
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
