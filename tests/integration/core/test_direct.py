"""Direct subscriptions (``ebind.direct``) against a real nats-server."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg

from ebind.app import App
from ebind.direct import DirectClient, DirectMsg, ack, publish, publish_nowait, subscribe_direct


@pytest.fixture
def nc(app: App) -> Any:
    """The connection of the core tests' App (a node of this test's own)."""
    return app.nc


def test_every_ebind_connection_dispatches_directly(nc: Any) -> None:
    assert isinstance(nc, DirectClient)


async def test_messages_reach_the_handler_in_order_with_headers(nc: Any) -> None:
    got: list[Msg] = []
    sub = await subscribe_direct(nc, "direct.order", got.append)
    assert sub._id in nc._direct
    for i in range(200):
        await nc.publish("direct.order", str(i).encode(), headers={"N": str(i)} if i % 2 else None)
    await nc.flush()
    for _ in range(100):
        if len(got) == 200:
            break
        await asyncio.sleep(0.01)
    assert [m.data for m in got] == [str(i).encode() for i in range(200)]
    assert [m.headers for m in got[:3]] == [None, {"N": "1"}, None]
    # Nothing went through nats-py's queue: the handler ran from the read loop.
    assert sub._pending_queue.qsize() == 0 and sub._received == 0
    await sub.unsubscribe()


async def test_a_handler_that_raises_does_not_stop_the_connection(nc: Any) -> None:
    seen: list[bytes] = []

    def handler(msg: Msg) -> None:
        if msg.data == b"boom":
            raise RuntimeError("handler bug")
        seen.append(msg.data)

    sub = await subscribe_direct(nc, "direct.raise", handler)
    for data in (b"a", b"boom", b"b"):
        await nc.publish("direct.raise", data)
    await nc.flush()
    for _ in range(100):
        if len(seen) == 2:
            break
        await asyncio.sleep(0.01)
    assert seen == [b"a", b"b"]
    assert nc.is_connected
    await sub.unsubscribe()


async def test_after_unsubscribe_the_handler_gets_nothing(nc: Any) -> None:
    got: list[bytes] = []
    sub = await subscribe_direct(nc, "direct.unsub", lambda m: got.append(m.data))
    await nc.publish("direct.unsub", b"1")
    await nc.flush()
    for _ in range(200):  # a loaded machine can still be handing "1" over
        if got:
            break
        await asyncio.sleep(0.01)
    await sub.unsubscribe()
    await nc.publish("direct.unsub", b"2")
    await nc.flush()
    await asyncio.sleep(0.05)
    assert got == [b"1"]


async def test_a_plain_nats_py_client_gets_a_queued_subscription(nats_url: str) -> None:
    plain = await nats.connect(nats_url)
    try:
        got: list[bytes] = []
        sub = await subscribe_direct(plain, "direct.plain", lambda m: got.append(m.data))
        await plain.publish("direct.plain", b"x")
        await plain.flush()
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.01)
        assert got == [b"x"] and sub._received == 1
    finally:
        await plain.close()


async def test_an_error_callback_that_raises_does_not_stop_reading(nats_url: str) -> None:
    async def error_cb(exc: Exception) -> None:
        raise RuntimeError("error callback bug")

    client = DirectClient()
    await client.connect(nats_url, error_cb=error_cb)
    try:
        seen: list[bytes] = []

        def handler(msg: Msg) -> None:
            if msg.data == b"boom":
                raise ValueError("handler bug")
            seen.append(msg.data)

        await subscribe_direct(client, "direct.cb", handler)
        for data in (b"boom", b"after"):
            await client.publish("direct.cb", data)
        await client.flush()
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        assert seen == [b"after"]
        assert client._reading_task is not None and not client._reading_task.done()
    finally:
        await client.close()


async def test_unsubscribe_and_drain_forget_the_handler(nc: Any) -> None:
    subs = [await subscribe_direct(nc, f"direct.forget.{i}", lambda m: None) for i in range(2)]
    assert all(s._id in nc._direct for s in subs)
    await subs[0].unsubscribe()
    await subs[1].drain()
    assert not any(s._id in nc._direct for s in subs)


async def _collect(got: list[Msg], n: int) -> None:
    for _ in range(200):
        if len(got) >= n:
            return
        await asyncio.sleep(0.01)


async def test_direct_publishes_arrive_as_nats_py_would_send_them(nc: Any) -> None:
    got: list[Msg] = []

    async def collect(msg: Msg) -> None:
        got.append(msg)

    sub = await nc.subscribe("direct.pub.>", cb=collect)
    before = nc.stats["out_msgs"]
    await publish(nc, "direct.pub.a", b"plain")
    await publish(nc, "direct.pub.b", b"with", reply="direct.reply", headers={"K": " v\r\nx "})
    assert publish_nowait(nc, "direct.pub.c", b"")
    await nc.publish("direct.pub.d", b"nats-py's own, after")
    await nc.flush()
    await _collect(got, 4)
    assert [(m.subject, m.data) for m in got] == [
        ("direct.pub.a", b"plain"),
        ("direct.pub.b", b"with"),
        ("direct.pub.c", b""),
        ("direct.pub.d", b"nats-py's own, after"),
    ]
    assert got[1].reply == "direct.reply" and got[1].headers == {"K": "v  x"}
    assert nc.stats["out_msgs"] - before == 4
    await sub.unsubscribe()


async def test_a_subject_nats_py_would_refuse_takes_nats_py_s_path(nc: Any) -> None:
    assert not publish_nowait(nc, "direct bad", b"x")
    assert not publish_nowait(nc, "direct.ok", b"x", reply="bad\r\nPUB x 1")
    with pytest.raises(nats.errors.BadSubjectError):
        await publish(nc, "direct\r\nbad", b"x")


async def test_deliveries_parse_headers_only_when_read(nc: Any) -> None:
    got: list[Msg] = []
    sub = await subscribe_direct(nc, "direct.lazy", got.append)
    await nc.publish("direct.lazy", b"1", headers={"Nats-Msg-Id": "abc", "X": "y"})
    await nc.publish("direct.lazy", b"2")
    await nc.flush()
    await _collect(got, 2)
    first, second = got
    assert isinstance(first, DirectMsg)
    assert first.raw_headers is not None and b"Nats-Msg-Id: abc" in first.raw_headers
    assert first.headers == {"Nats-Msg-Id": "abc", "X": "y"}
    assert first.raw_headers is None  # parsed once, then kept
    assert second.raw_headers == b"" and second.headers is None
    first.headers = {"Z": "1"}
    assert first.headers == {"Z": "1"}
    await sub.unsubscribe()


async def test_a_status_reply_reads_as_nats_py_parses_it(nc: Any) -> None:
    got: list[Msg] = []
    inbox = nc.new_inbox()
    sub = await subscribe_direct(nc, inbox, got.append)
    await nc.publish("direct.nobody.listens", b"x", reply=inbox)  # no responders: a 503
    await nc.flush()
    await _collect(got, 1)
    assert got and not got[0].data
    assert got[0].headers is not None and got[0].headers.get("Status") == "503"
    await sub.unsubscribe()


async def test_ack_through_the_direct_path_acks_once(app: App) -> None:
    js = app.js
    await js.add_stream(name="DIRECTACK", subjects=["directack.>"])
    try:
        await js.publish("directack.one", b"x")
        psub = await js.pull_subscribe("directack.>", durable="d", stream="DIRECTACK")
        [msg] = await psub.fetch(1, timeout=5)
        await ack(msg)
        assert msg._ackd
        with pytest.raises(nats.errors.MsgAlreadyAckdError):
            await ack(msg)  # a second ack is refused, as nats-py refuses it
        await app.nc.flush()
        for _ in range(100):
            info = await js.consumer_info("DIRECTACK", "d")
            if info.num_ack_pending == 0:
                break
            await asyncio.sleep(0.02)
        assert info.num_ack_pending == 0 and info.num_pending == 0
    finally:
        await js.delete_stream("DIRECTACK")


async def test_a_closed_connection_is_left_to_nats_py(nats_url: str) -> None:
    client = DirectClient()
    await client.connect(nats_url)
    await client.close()
    assert not client.publish_nowait("direct.closed", b"x")
    with pytest.raises(nats.errors.ConnectionClosedError):
        await publish(client, "direct.closed", b"x")
