"""The producer's own PubAck pipeline: bounded waits, the window, server errors, missed results."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from core_helpers import tasks_count

import ebind.client
from ebind.app import App
from ebind.client import Publisher
from ebind.errors import PublishFailed
from ebind.wire import TaskEnvelope, TaskResponse, encoder


def _env(task_id: str) -> TaskEnvelope:
    return TaskEnvelope(id=task_id, name="pipe.task")


async def _publisher(app: App, *, bound: float = 5.0, window: int = 4000) -> Publisher:
    pub = Publisher(app.nc, app.js, timeout=bound, window=window)
    await pub.start()
    return pub


def _divert_acks(pub: Publisher) -> None:
    # PubAcks go to an inbox nobody reads: every publish is stored but never confirmed.
    pub._prefix = "_INBOX.ebind-test-nowhere."


async def test_many_concurrent_publishes_are_all_confirmed(app: App) -> None:
    pub = await _publisher(app, window=8)
    before = await tasks_count(app)
    await asyncio.gather(*[pub.publish(_env(f"pipe-{i}")) for i in range(200)])
    assert await tasks_count(app) == before + 200
    assert pub._acks == {}


async def test_unconfirmed_publish_fails_within_its_bound(app: App) -> None:
    pub = await _publisher(app, bound=0.3)
    prefix = pub._prefix
    _divert_acks(pub)
    start = time.monotonic()
    results = await asyncio.gather(
        *[pub.publish(_env(f"lost-{i}")) for i in range(3)], return_exceptions=True
    )
    elapsed = time.monotonic() - start
    assert all(isinstance(r, PublishFailed) for r in results), results
    assert "not confirmed within 0.3s (no confirmation)" in str(results[0])
    assert 0.25 <= elapsed < 2.0
    assert pub._acks == {}
    # The sweeper re-arms: a later publish with working acks is confirmed, a lost one fails.
    pub._prefix = prefix
    await pub.publish(_env("found-1"))
    _divert_acks(pub)
    with pytest.raises(PublishFailed, match="retry with the same task_id"):
        await pub.publish(_env("lost-late"))


async def test_full_window_waits_then_fails_within_the_bound(app: App) -> None:
    pub = await _publisher(app, bound=0.3, window=2)
    _divert_acks(pub)
    results = await asyncio.gather(
        *[pub.publish(_env(f"win-{i}")) for i in range(3)], return_exceptions=True
    )
    assert all(isinstance(r, PublishFailed) for r in results), results
    assert pub._acks == {} and not [s for s in pub._slots if not s.done()]


async def test_full_window_proceeds_as_acks_arrive(app: App) -> None:
    pub = await _publisher(app, bound=5.0, window=1)
    await asyncio.gather(*[pub.publish(_env(f"one-{i}")) for i in range(20)])
    assert pub._acks == {}


async def test_no_stream_for_the_subject_fails(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ebind.client, "task_subject", lambda name, *route: f"nostream.{name}")
    pub = await _publisher(app, bound=2.0)
    with pytest.raises(PublishFailed, match="NoStreamResponseError"):
        await pub.publish(_env("nostream-1"))


async def test_pubAck_api_error_fails_the_publish(app: App) -> None:  # noqa: N802
    pub = await _publisher(app)
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()
    pub._acks["7"] = (fut, loop.time() + 5)
    error = (
        b'{"error":{"code":400,"err_code":10060,"description":"expected stream does not match"}}'
    )
    pub._on_ack(SimpleNamespace(subject=pub._prefix + "7", headers=None, data=error))
    with pytest.raises(Exception, match="expected stream does not match"):
        fut.result()


async def test_wrong_stream_in_the_ack_fails(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    pub = await _publisher(app)
    real = pub._on_ack

    async def other_stream(msg: Any) -> None:
        data = msg.data.replace(b'"EBIND_TASKS"', b'"OTHER"')
        await real(SimpleNamespace(subject=msg.subject, headers=msg.headers, data=data))

    await pub._sub.unsubscribe()
    pub._sub = await app.nc.subscribe(pub._prefix + "*", cb=other_stream)
    with pytest.raises(PublishFailed, match="stored in stream 'OTHER'"):
        await pub.publish(_env("other-1"))


async def test_missed_wakes_a_waiting_result(app: App) -> None:
    # A response the subscription never sees (here: stored under another client id) is found
    # by the stream check that missed() triggers, long before the 5 s periodic check.
    other = "f" * 32
    fut = app.future("missed-1", client_id=other)
    waiting = asyncio.create_task(fut.result(timeout=4))
    await asyncio.sleep(0.2)
    resp = TaskResponse(task_id="missed-1", attempts=1)
    await app.js.publish(f"RESP.{other}.missed-1", encoder.encode(resp))
    start = time.monotonic()
    app._router.missed()  # type: ignore[union-attr]
    assert await asyncio.wait_for(waiting, 3) is None
    assert time.monotonic() - start < 2.0
