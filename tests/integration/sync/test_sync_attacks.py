"""Review findings on the blocking API: each test fails on the current code for the reason named."""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading
import time
import warnings
from typing import Any

import pytest
from sync_helpers import worker_thread
from sync_tasks import app_pair

from ebind.embed import Node
from ebind.errors import EbindError, NotConnected, PublishFailed, TaskTimeout


def _in_thread(fn: Any, within: float) -> dict[str, Any]:
    """Run ``fn()`` on a daemon thread; report whether it returned within ``within`` s."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    started = time.monotonic()
    t.start()
    t.join(within)
    box["returned"] = not t.is_alive()
    box["elapsed"] = time.monotonic() - started
    return box


# --- 1. a handle whose connection was closed ------------------------------------------------


def test_get_on_a_handle_of_a_closed_connection_raises_not_connected(nats_node: Node) -> None:
    """SyncResult.get documents NotConnected for "a connection that is gone (closed, ...)".

    After ``app.sync.close()`` (and a reconnect) the old handle's Future still points at the
    closed connection's router: it can never see the response, yet get() waits the whole
    timeout and raises TaskTimeout ("it may still run: wait again"), which is false, and
    with ``timeout=None`` it waits forever. The result *is* stored meanwhile.
    """
    producer, tasks, worker_app, _ = app_pair(nats_node.client_url)
    with worker_thread(worker_app):
        try:
            handle = tasks.nap.sync.delay(0.5)  # answers after the close below
            producer.sync.close()
            producer.sync.connect()  # the app is usable again; the old handle is not
            started = time.monotonic()
            try:
                handle.get(timeout=3)
                outcome: object = "returned"
            except (NotConnected, TaskTimeout) as exc:
                outcome = exc
            # The task ran and its result is stored: a fresh handle reads it at once.
            fresh = producer.sync.future(handle.id, name="sync.nap", token=handle.token)
            assert fresh.get(timeout=5) == "rested"
            assert isinstance(outcome, NotConnected), (
                f"get() on a handle of a closed connection gave {outcome!r} after "
                f"{time.monotonic() - started:.1f}s although the result was stored"
            )
        finally:
            producer.sync.close()


# --- 2. gather ignores its timeout on handles whose loop is gone ----------------------------


def test_gather_on_handles_of_a_stopped_loop_raises_instead_of_hanging(nats_url: str) -> None:
    """res.get() refuses a handle whose loop stopped (NotConnected); gather() hangs forever.

    gather() has no check of the handle's loop or pid, hands the wait to a loop that no
    longer runs, and blocks on concurrent.futures.Future.result() with no bound: its own
    ``timeout`` lives inside the coroutine that never starts.
    """
    producer, tasks, _, _ = app_pair(nats_url)
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    asyncio.run_coroutine_threadsafe(producer.connect(), loop).result(30)
    handle = tasks.add.sync.delay(1, 2)  # APP_LOOP route: a handle on that loop
    asyncio.run_coroutine_threadsafe(producer.close(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    runner.join(10)
    with pytest.raises(NotConnected):
        handle.get(timeout=1)  # get() names the problem
    box = _in_thread(lambda: producer.sync.gather([handle], timeout=1), within=5)
    assert box["returned"], "app.sync.gather(timeout=1) was still blocked after 5s"
    assert isinstance(box.get("error"), NotConnected), box


def test_gather_in_a_forked_child_on_inherited_handles_does_not_hang(nats_node: Node) -> None:
    """The gunicorn/prefork case of the same defect: inherited handles in the child.

    get() raises NotConnected ("left in the parent process by fork"); gather() on the same
    handle blocks the child forever, whatever its timeout.
    """
    producer, tasks, worker_app, _ = app_pair(nats_node.client_url)
    with worker_thread(worker_app):
        try:
            inherited = tasks.nap.sync.delay(0.5)

            def in_child() -> dict[str, object]:
                box = _in_thread(lambda: producer.sync.gather([inherited], timeout=1), 5)
                return {"returned": box["returned"], "error": repr(box.get("error"))}

            read_fd, write_fd = os.pipe()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
            if pid == 0:  # the child: report and leave without cleanup
                os.close(read_fd)
                code = 1
                try:
                    os.write(write_fd, json.dumps(in_child()).encode())
                    code = 0
                finally:
                    os._exit(code)
            os.close(write_fd)
            _, status = os.waitpid(pid, 0)
            with os.fdopen(read_fd, "rb") as f:
                report = json.loads(f.read() or b"{}")
            assert os.waitstatus_to_exitcode(status) == 0, report
            assert report["returned"], f"gather(timeout=1) in the child hung: {report}"
            assert "NotConnected" in report["error"], report
            assert inherited.get(timeout=10) == "rested"  # the parent is unaffected
        finally:
            producer.sync.close()


# --- 3. the async API after the blocking API connected the App ------------------------------


def test_async_call_after_the_blocking_api_connected_gets_a_clear_error(nats_node: Node) -> None:
    """A Django ASGI project mixing sync and async views (or a FastAPI app whose module
    called ``app.sync.connect()``): once the blocking API connected the App on its
    background loop, ``await task.delay()`` on the server's loop is a no-op connect plus a
    publish from the wrong thread. It raises PublishFailed "was not confirmed within 5.0s"
    at once (0 s), wrapping "attached to a different loop", while the server did store the
    task and it ran: a false "not confirmed", and a publish made off the connection's thread.
    Expected: the async call works, or is refused before publishing with an error naming
    the other event loop.
    """
    producer, tasks, worker_app, _ = app_pair(nats_node.client_url)
    with worker_thread(worker_app):
        try:
            assert tasks.add.sync.delay(1, 2).get(timeout=10) == 3  # a sync view ran first

            async def async_view() -> object:
                await producer.connect()  # an ASGI lifespan / `async with app:`
                started = time.monotonic()
                try:
                    fut = await tasks.add.apply_async((2, 3), task_id="review-async-after-sync")
                    return await fut.result(timeout=10)
                except EbindError as exc:
                    return (exc, time.monotonic() - started)

            outcome = asyncio.run(asyncio.wait_for(async_view(), 20))
            if outcome == 5:
                return  # works: fine
            assert isinstance(outcome, tuple)
            exc, elapsed = outcome
            stored = producer.sync.future("review-async-after-sync")
            try:
                ran = stored.get(timeout=3)
            except TaskTimeout:
                ran = None
            assert not isinstance(exc, PublishFailed), (
                f"got PublishFailed after {elapsed:.2f}s ({exc}); the task was stored and ran "
                f"(result {ran!r})"
            )
            assert ran is None, "an async call refused for its loop must not publish anything"
        finally:
            producer.sync.close()


# --- 4. a NaN timeout waits forever ---------------------------------------------------------


def test_get_with_a_nan_timeout_is_refused_not_waited_forever(nats_url: str) -> None:
    """``res.get(timeout=float("nan"))`` (a timeout computed from a bad setting or a
    parsed query parameter) never times out: every deadline comparison with NaN is False,
    so the wait loops in 5..60 s slices forever. Expected: an error naming the bad timeout.
    """
    producer, tasks, _, _ = app_pair(nats_url)
    try:
        handle = tasks.add.sync.delay(1, 1)  # no worker: no answer will come
        box = _in_thread(lambda: handle.get(timeout=math.nan), within=3)
        assert box["returned"], "get(timeout=nan) was still waiting after 3s"
        assert isinstance(box.get("error"), ValueError), box
    finally:
        producer.sync.close()
