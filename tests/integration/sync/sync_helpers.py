"""Helpers for the blocking-API tests: a worker on its own thread, and the server's view."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from ebind._embed_proc import http_get
from ebind.app import App
from ebind.embed import Node
from ebind.worker import Worker


@contextlib.contextmanager
def worker_thread(app: App, **options: Any) -> Iterator[Worker]:
    """Connect ``app`` and run a Worker for it on a thread with its own loop, for the block.

    The tests' own thread stays free of any event loop, as in a Django view or a script.
    """
    options.setdefault("scheduler", False)
    options.setdefault("ack_wait", 2.0)
    options.setdefault("shutdown_grace", 5.0)
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        async with app:
            worker = Worker(app, **options)
            box["worker"], box["loop"] = worker, asyncio.get_running_loop()
            run = asyncio.create_task(worker.run())
            # Claims are set once its consumers exist: no event to wait on, so poll.
            while not worker.claims and not run.done():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            ready.set()
            await run

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            box["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=target, name="test-worker", daemon=True)
    thread.start()
    assert ready.wait(30), "worker did not start within 30s"
    if "error" in box:
        raise box["error"]
    try:
        yield box["worker"]
    finally:
        stop = asyncio.run_coroutine_threadsafe(box["worker"].stop(), box["loop"])
        stop.result(30)
        thread.join(30)
        assert not thread.is_alive(), "worker thread did not stop"
        if "error" in box:
            raise box["error"]


def connections_named(node: Node, name: str) -> int:
    """How many client connections the server holds with this client name."""
    status, body = http_get(f"{node.http_url}/connz?limit=4096")
    assert status == 200, body
    conns = json.loads(body).get("connections") or []
    return sum(1 for c in conns if c.get("name") == name)


def total_connections(node: Node) -> int:
    """Connections the server accepted since it started (``/varz`` total_connections)."""
    return int(node.varz()["total_connections"])


def await_connections(node: Node, name: str, count: int, within: float = 5.0) -> None:
    """Wait until the server holds ``count`` connections named ``name`` (closes land late)."""
    deadline = time.monotonic() + within
    while (seen := connections_named(node, name)) != count:
        assert time.monotonic() < deadline, f"{seen} connections named {name!r}, not {count}"
        time.sleep(0.05)


def in_forked_child(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Fork, run ``run()`` in the child and return its report (``error`` when it raised).

    The child leaves with ``os._exit`` (no cleanup of what it inherited); the child's exit
    status must be 0 and is checked here.
    """
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns on fork with threads running: forking such a process is
        # exactly what gunicorn and uWSGI do, and what these tests check.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        code = 1
        try:
            report = run()
            code = 0
        except BaseException as exc:
            report = {"error": repr(exc)}
        finally:
            try:
                os.write(write_fd, json.dumps(report).encode())
            finally:
                os._exit(code)
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_fd, "rb") as f:
        report = json.loads(f.read() or b"{}")
    assert os.waitstatus_to_exitcode(status) == 0, report
    return report  # type: ignore[no-any-return]
