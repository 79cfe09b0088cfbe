"""Direct subscriptions (``ebind.direct``) against a real nats-server."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg

from ebind.app import App
from ebind.direct import DirectClient, subscribe_direct


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
