"""ebind's lean request path (``ebind._jsreq``) against a real nats-server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pytest

from ebind._jsreq import (
    HEADER_EXPECTED_LAST_SUBJECT_SEQ,
    HEADER_EXPECTED_STREAM,
    Requests,
    requests_for,
)
from ebind.app import App


@pytest.fixture
def nc(app: App) -> Any:
    """The connection of the core tests' App (a node of this test's own)."""
    return app.nc


@pytest.fixture
async def stream(nc: Any) -> AsyncIterator[str]:
    name = "JSREQ" + uuid.uuid4().hex[:8].upper()
    js = nc.jetstream()
    await js.add_stream(name=name, subjects=[f"{name.lower()}.>"], allow_direct=True)
    try:
        yield name
    finally:
        await js.delete_stream(name)


async def test_publish_returns_the_puback_and_get_last_reads_it_back(nc: Any, stream: str) -> None:
    req = requests_for(nc)
    assert requests_for(nc) is req  # one inbox subscription per connection
    subject = f"{stream.lower()}.a"
    ack = await req.publish(subject, b"one", {HEADER_EXPECTED_STREAM: stream})
    assert (ack.stream, ack.seq, ack.duplicate) == (stream, 1, False)
    msg = await req.get_last(stream, subject)
    assert msg is not None and msg.data == b"one"
    assert msg.headers["Nats-Sequence"] == "1"
    assert await req.get_last(stream, f"{stream.lower()}.missing") is None


async def test_a_failed_expectation_raises_the_servers_error(nc: Any, stream: str) -> None:
    req = requests_for(nc)
    subject = f"{stream.lower()}.b"
    await req.publish(subject, b"v1")
    with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
        await req.publish(subject, b"v2", {HEADER_EXPECTED_LAST_SUBJECT_SEQ: "0"})
    with pytest.raises(nats.js.errors.APIError) as info:
        await req.publish(subject, b"v2", {HEADER_EXPECTED_STREAM: "NOT_" + stream})
    assert info.value.code == 400 and "stream" in str(info.value.description).lower()
    # Nothing was stored by the refused publishes.
    got = await req.get_last(stream, subject)
    assert got is not None and got.data == b"v1"


async def test_no_stream_and_no_responder_are_reported_as_such(nc: Any) -> None:
    req = requests_for(nc)
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await req.publish("jsreq-nobody." + uuid.uuid4().hex, b"x")
    with pytest.raises(nats.errors.NoRespondersError):
        await req.get_last("NO_SUCH_STREAM_" + uuid.uuid4().hex[:6].upper(), "a.b")


async def test_a_silent_responder_times_out_and_a_late_reply_is_ignored(nc: Any) -> None:
    req = Requests(nc, timeout=0.2)
    subject = "jsreq-slow." + uuid.uuid4().hex
    held: list[Any] = []

    async def hold(msg: Any) -> None:
        held.append(msg)

    sub = await nc.subscribe(subject, cb=hold)
    try:
        with pytest.raises(TimeoutError):
            await req.request(subject, b"ping")
        assert len(held) == 1 and not req._waiting
        await nc.publish(held[0].reply, b"too late")  # nobody waits for it any more
        await nc.flush()
        await asyncio.sleep(0.05)
        assert not req._waiting

        # The path still works afterwards.
        async def echo(msg: Any) -> None:
            await nc.publish(msg.reply, msg.data)

        other = await nc.subscribe(subject + ".echo", cb=echo)
        assert (await req.request(subject + ".echo", b"hi")).data == b"hi"
        await other.unsubscribe()
    finally:
        await sub.unsubscribe()


async def test_requests_sent_at_different_times_each_time_out_on_their_own_deadline(
    nc: Any,
) -> None:
    req = Requests(nc, timeout=0.3)
    subject = "jsreq-silent." + uuid.uuid4().hex

    async def ignore(_msg: Any) -> None:
        return None

    sub = await nc.subscribe(subject, cb=ignore)
    loop = asyncio.get_running_loop()

    async def timed(delay: float) -> float:
        await asyncio.sleep(delay)
        started = loop.time()
        with pytest.raises(TimeoutError):
            await req.request(subject, b"ping")
        return loop.time() - started

    try:
        # One timer serves them all: each still fails about ``timeout`` after its own send,
        # the later ones after the timer re-armed for them.
        waited = await asyncio.gather(timed(0), timed(0.1), timed(0.2), timed(0.35))
        assert all(0.28 <= w < 0.6 for w in waited), waited
        assert not req._waiting and req._sweeper is None

        # A reply in time still wins while older requests are timing out around it.
        async def echo(msg: Any) -> None:
            await nc.publish(msg.reply, msg.data)

        other = await nc.subscribe(subject + ".echo", cb=echo)
        slow = asyncio.ensure_future(timed(0))
        assert (await req.request(subject + ".echo", b"hi")).data == b"hi"
        assert 0.28 <= await slow < 0.6
        await other.unsubscribe()
    finally:
        await sub.unsubscribe()


async def test_many_concurrent_requests_each_get_their_own_reply(nc: Any, stream: str) -> None:
    req = requests_for(nc)
    subjects = [f"{stream.lower()}.k{i}" for i in range(200)]
    acks = await asyncio.gather(*(req.publish(s, s.encode()) for s in subjects))
    assert sorted(a.seq for a in acks) == list(range(1, 201))
    got = await asyncio.gather(*(req.get_last(stream, s) for s in subjects))
    assert [m.data for m in got] == [s.encode() for s in subjects]


async def test_a_closed_connection_and_its_requests_can_be_collected(nats_url: str) -> None:
    import gc
    import weakref

    conn = await nats.connect(nats_url)
    req = requests_for(conn)
    await req.request("$JS.API.INFO")
    await conn.close()
    ref = weakref.ref(conn)
    del conn, req
    gc.collect()
    assert ref() is None


async def test_a_redelivery_whose_task_was_answered_meanwhile_is_recognized(app: App) -> None:
    from concurrent.futures import ThreadPoolExecutor
    from datetime import UTC, datetime, timedelta

    import msgspec

    from ebind.retry import RetryPolicy
    from ebind.wire import TaskEnvelope, TaskResponse, encoder
    from ebind.worker.runner import AttemptRunner, outcome_msg_id, stream_seq

    async def never(*_: object) -> bytes:
        raise AssertionError("not called")

    with ThreadPoolExecutor(1) as pool:
        runner = AttemptRunner(
            app,
            worker_id="w",
            chain=never,
            hook=None,
            default_policy=RetryPolicy(),
            executor=pool,
            max_payload=1 << 20,
        )
        sent = datetime.now(UTC)
        env = TaskEnvelope(
            id="t-ans",
            name="demo",
            payload=msgspec.Raw(b"[]"),
            enqueued_at=sent,
            reply_to=f"RESP.{app.client_id}.t-ans",
            attempt=2,
        )
        assert not await runner._answered(env)  # nothing stored yet: run it
        done = TaskResponse(task_id="t-ans", result=None, completed_at=sent)
        await app.publish_response(env.reply_to, encoder.encode(done))
        assert await runner._answered(env)  # the first delivery's answer landed late
        requeued = msgspec.structs.replace(env, enqueued_at=sent + timedelta(seconds=1))
        assert not await runner._answered(requeued)  # an answer to an earlier run
        other = msgspec.structs.replace(env, id="t-other")
        assert not await runner._answered(other)
        untimed = msgspec.structs.replace(env, enqueued_at=None)
        assert not await runner._answered(untimed)  # nothing to tell runs apart: run it

    class Delivery:  # the parts of a JetStream message outcome_msg_id reads
        subject = "TASKS.demo"
        reply = "$JS.ACK.EBIND_TASKS.ebind-workers.2.417.9.1732400000000000000.0"

    assert stream_seq(Delivery()) == 417
    assert outcome_msg_id(Delivery(), "dlq") == "TASKS.demo:417:dlq"
