"""A subject holding a control byte the server relays (a vertical tab, a form feed) is read
like any other: it neither resets a worker's connection nor goes unrecorded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from raw_client import send_raw
from worker_helpers import running

from ebind.app import App
from ebind.streams import b64_token

pytestmark = pytest.mark.timeout(60)

PROMPTLY = 10.0


def _pub(subject: bytes, data: bytes) -> bytes:
    return b"PUB %s %d\r\n%s\r\n" % (subject, len(data), data)


def _register(app: App) -> Any:
    @app.task(name="sec.echo")
    async def echo(value: str = "ok") -> str:
        return value

    return echo


@pytest.mark.parametrize("ws", [b"\x0b", b"\x0c"])
async def test_a_targeted_subject_with_vt_or_ff_neither_resets_the_worker_nor_vanishes(
    app: App, nats_url: str, ws: bytes
) -> None:
    # nats-server splits protocol arguments on space, tab, CR and LF only, so a producer
    # can store a task on "TASKS_TARGET.<claim>.sec.echo\x0b..." (the claim durable's
    # filter is TASKS_TARGET.<claim>.>). nats-py's MSG/HMSG patterns split on \s, which
    # includes \x0b and \x0c; ebind's parser splits where the server does.
    echo = _register(app)
    claim = b64_token("gpu").encode()
    async with running(app, worker_id="w1", claims=["gpu"]):
        await asyncio.sleep(0.3)
        reading = app.nc._reading_task
        reconnects = app.nc.stats["reconnects"]
        await send_raw(nats_url, _pub(b"TASKS_TARGET.%s.sec.echo%sx" % (claim, ws), b'{"id":"x"}'))
        # ack_wait is 2 s: a delivery lost with the connection comes back, and again.
        await asyncio.sleep(7.0)
        resets = app.nc.stats["reconnects"] - reconnects
        assert resets == 0 and app.nc._reading_task is reading, (
            f"one stored message reset the worker's connection {resets} times in 7 s "
            "(nats-py's parser raised ProtocolError on its MSG line)"
        )
        assert await (await echo.delay("after")).result(PROMPTLY) == "after"
        assert await app.dlq.count() == 1  # the hostile task: dead-lettered, not lost


async def test_a_revocation_subject_with_a_vertical_tab_does_not_reset_every_worker(
    app: App, nats_url: str
) -> None:
    # A producer may publish under $KV.ebind-leases.revoked.> (app.revoke); every worker
    # subscribes to that wildcard, so one such publish reaches all of them at once.
    echo = _register(app)
    async with running(app):
        await asyncio.sleep(0.3)
        reading = app.nc._reading_task
        await send_raw(nats_url, _pub(b"$KV.ebind-leases.revoked.a\x0bb", b""))
        await asyncio.sleep(0.5)
        assert app.nc._reading_task is reading and not reading.done(), (
            "one publish on a revocation subject ended the worker's read loop "
            "(nats-py's parser raised ProtocolError on its MSG line)"
        )
        assert await (await echo.delay("after")).result(PROMPTLY) == "after"
