"""Handles and Apps used past their connection: named errors at once, never a silent wait."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Any

import pytest
from sync_helpers import in_forked_child, worker_thread
from sync_tasks import app_pair

from ebind.embed import Node
from ebind.errors import (
    EbindError,
    InvalidArguments,
    NotConnected,
    PublishFailed,
    TaskTimeout,
    WrongEventLoop,
)


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


# --- a handle whose connection was closed ---------------------------------------------------


def test_get_on_a_handle_of_a_closed_connection_raises_not_connected(nats_node: Node) -> None:
    """A handle of a connection closed by ``app.sync.close()`` raises NotConnected at once.

    Its response can never reach it (the background loop still runs, and the App may have
    connected again), so waiting out the timeout and calling it a TaskTimeout ("it may still
    run") would be false. The message names the way back, and a fresh handle reads the
    stored result.
    """
    producer, tasks, worker_app, _ = app_pair(nats_node.client_url)
    with worker_thread(worker_app):
        try:
            handle = tasks.nap.sync.delay(0.5)  # answers after the close below
            producer.sync.close()
            producer.sync.connect()  # the app is usable again; the old handle is not
            started = time.monotonic()
            with pytest.raises(NotConnected, match=r"app\.sync\.future\(task_id, token="):
                handle.get(timeout=3)
            with pytest.raises(NotConnected):
                handle.get()  # without a timeout too: no endless wait
            assert time.monotonic() - started < 1.0
            fresh = producer.sync.future(handle.id, name="sync.nap", token=handle.token)
            assert fresh.get(timeout=5) == "rested"
        finally:
            producer.sync.close()


def test_a_wait_in_progress_ends_when_its_connection_is_closed(nats_url: str) -> None:
    """``get(timeout=None)`` blocked in one thread ends with NotConnected when another
    thread closes the connection: the closed router wakes its waiters."""
    producer, tasks, _, _ = app_pair(nats_url)
    try:
        handle = tasks.add.sync.delay(1, 2)  # no worker: no answer will come
        box: dict[str, Any] = {}
        waiter = threading.Thread(target=lambda: box.update(r=_in_thread(handle.get, 10)))
        waiter.start()
        time.sleep(0.3)
        producer.sync.close()
        waiter.join(15)
        assert box["r"]["returned"], "get() still waited after its connection was closed"
        assert isinstance(box["r"].get("error"), NotConnected), box
    finally:
        producer.sync.close()


def test_an_async_future_of_a_closed_app_raises_not_connected(nats_url: str) -> None:
    """The async Future is held to the same rule: ``await fut.result()`` after
    ``await app.close()`` raises NotConnected instead of waiting for an answer that
    cannot arrive."""
    producer, tasks, _, _ = app_pair(nats_url)

    async def main() -> None:
        await producer.connect()
        fut = await tasks.add.delay(1, 2)
        await producer.close()
        with pytest.raises(NotConnected, match=r"app\.future\(task_id, token="):
            await asyncio.wait_for(fut.result(), 5)

    asyncio.run(main())


# --- gather on handles whose loop is gone ---------------------------------------------------


def test_gather_on_handles_of_a_stopped_loop_raises_instead_of_hanging(nats_url: str) -> None:
    """``app.sync.gather`` checks each handle as ``get()`` does: a handle whose event loop
    stopped raises NotConnected at once rather than waiting on a loop that never runs."""
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
        handle.get(timeout=1)
    box = _in_thread(lambda: producer.sync.gather([handle], timeout=1), within=5)
    assert box["returned"], "app.sync.gather(timeout=1) was still blocked after 5s"
    assert isinstance(box.get("error"), NotConnected), box
    loop.close()


def test_gather_in_a_forked_child_on_inherited_handles_does_not_hang(nats_node: Node) -> None:
    """The prefork case (gunicorn, uWSGI): handles inherited by a child raise NotConnected
    from ``gather`` as from ``get``, and the parent keeps its own results."""
    producer, tasks, worker_app, _ = app_pair(nats_node.client_url)
    with worker_thread(worker_app):
        try:
            inherited = tasks.nap.sync.delay(0.5)

            def in_child() -> dict[str, Any]:
                box = _in_thread(lambda: producer.sync.gather([inherited], timeout=1), 5)
                return {"returned": box["returned"], "error": repr(box.get("error"))}

            report = in_forked_child(in_child)
            assert report["returned"], f"gather(timeout=1) in the child hung: {report}"
            assert "NotConnected" in report["error"], report
            assert inherited.get(timeout=10) == "rested"  # the parent is unaffected
        finally:
            producer.sync.close()


def test_async_connect_in_a_forked_child_connects_afresh(nats_node: Node) -> None:
    """A child forked after the App connected on a loop of the parent's (an async web
    app's, a worker's): async use in the child names the fork, and ``await app.connect()``
    on the child's own loop leaves the parent's connection alone and opens the child's."""
    producer, tasks, worker_app, _ = app_pair(nats_node.client_url)
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    with worker_thread(worker_app):
        try:
            asyncio.run_coroutine_threadsafe(producer.connect(), loop).result(30)
            assert tasks.add.sync.delay(1, 2).get(timeout=10) == 3  # served by that loop

            async def child_main() -> dict[str, Any]:
                try:
                    await tasks.add.delay(0, 0)
                    before = "published"
                except WrongEventLoop as exc:
                    before = str(exc)
                await producer.connect()
                fut = await tasks.add.delay(3, 4)
                value = await fut.result(timeout=10)
                await producer.close()
                return {"before": before, "value": value}

            report = in_forked_child(lambda: asyncio.run(asyncio.wait_for(child_main(), 20)))
            assert "forked" in report["before"], report
            assert report["value"] == 7, report
            assert tasks.add.sync.delay(5, 5).get(timeout=10) == 10  # the parent's still works
        finally:
            asyncio.run_coroutine_threadsafe(producer.close(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
            runner.join(10)
            loop.close()


# --- the async API after the blocking API connected the App ---------------------------------


def _stored(producer: Any, task_id: str) -> object:
    """The result stored for ``task_id`` within 3 s, or None when the task never ran."""
    try:
        return producer.sync.future(task_id).get(timeout=3)
    except TaskTimeout:
        return None


def test_async_call_after_the_blocking_api_connected_is_refused_before_publishing(
    nats_node: Node,
) -> None:
    """An App the blocking API connected on its background loop, used by async code on
    another loop (a Django ASGI project mixing sync and async views, a FastAPI module that
    called ``app.sync.connect()``): ``await task.delay()`` raises WrongEventLoop at once,
    naming the other loop and what to do, and publishes nothing (not a false PublishFailed
    for a task the server stored)."""
    producer, tasks, worker_app, _ = app_pair(nats_node.client_url)
    with worker_thread(worker_app):
        try:
            assert tasks.add.sync.delay(1, 2).get(timeout=10) == 3  # a sync view ran first

            async def async_view() -> object:
                started = time.monotonic()
                try:
                    await tasks.add.apply_async((2, 3), task_id="async-after-sync")
                except EbindError as exc:
                    return (exc, time.monotonic() - started)
                return "published"

            outcome = asyncio.run(asyncio.wait_for(async_view(), 20))
            assert isinstance(outcome, tuple), outcome
            exc, elapsed = outcome
            assert isinstance(exc, WrongEventLoop), repr(exc)
            assert not isinstance(exc, PublishFailed)
            assert "background loop" in str(exc) and "app.sync" in str(exc), str(exc)
            assert elapsed < 0.5
            assert _stored(producer, "async-after-sync") is None, "the refused call published"
            assert tasks.add.sync.delay(2, 2).get(timeout=10) == 4  # the sync side is unharmed
        finally:
            producer.sync.close()


def test_async_connect_on_another_loop_is_refused_then_works_after_a_close(
    nats_node: Node,
) -> None:
    """``await app.connect()`` (an ASGI lifespan, ``async with app:``) on a loop other than
    the one the App is connected on raises WrongEventLoop instead of silently keeping the
    other loop's connection; after ``app.sync.close()`` it connects on this loop."""
    producer, tasks, worker_app, _ = app_pair(nats_node.client_url)
    with worker_thread(worker_app):
        try:
            producer.sync.connect()

            async def lifespan() -> object:
                with pytest.raises(WrongEventLoop, match="another event loop"):
                    await producer.connect()
                await asyncio.to_thread(producer.sync.close)
                async with producer:
                    fut = await tasks.add.delay(2, 3)
                    return await fut.result(timeout=10)

            assert asyncio.run(asyncio.wait_for(lifespan(), 20)) == 5
        finally:
            producer.sync.close()


# --- a timeout that is not a number of seconds ----------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1, True, "10"])
def test_get_and_gather_refuse_a_timeout_that_is_not_seconds(nats_url: str, bad: object) -> None:
    """``res.get(timeout=nan)`` (a timeout computed from a bad setting or a parsed query
    parameter) would never time out: every deadline comparison with NaN is false. Such a
    timeout, and one that is not a number, is refused with InvalidArguments naming it."""
    producer, tasks, _, _ = app_pair(nats_url)
    try:
        handle = tasks.add.sync.delay(1, 1)  # no worker: no answer will come
        box = _in_thread(lambda: handle.get(timeout=bad), within=3)  # type: ignore[arg-type]
        assert box["returned"], f"get(timeout={bad!r}) was still waiting after 3s"
        error = box.get("error")
        assert isinstance(error, InvalidArguments) and isinstance(error, ValueError), box
        assert error.parameter == "timeout" and repr(bad) in str(error), str(error)
        with pytest.raises(InvalidArguments, match="timeout"):
            producer.sync.gather([handle], timeout=bad)  # type: ignore[arg-type]
    finally:
        producer.sync.close()
