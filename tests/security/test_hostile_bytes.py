"""Bytes nats-server relays but nats-py cannot decode must not deafen an ebind connection.

nats-server does not check that a subject is UTF-8 nor that a header block is well formed.
nats-py decodes both in its read loop, and an exception there ends the loop for good: the
connection still says it is connected but reads nothing until pings time out (minutes).
Each test sends such a message raw, over a socket of its own, onto a subject an ebind
connection receives, then checks that connection still works at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from raw_client import send_raw
from worker_helpers import running

from ebind.app import App

pytestmark = pytest.mark.timeout(60)

PROMPTLY = 10.0  # seconds; a deaf connection stays deaf for minutes (ping interval 2 min)


def _pub(subject: bytes, data: bytes) -> bytes:
    return b"PUB %s %d\r\n%s\r\n" % (subject, len(data), data)


def _hpub(subject: bytes, header: bytes, data: bytes) -> bytes:
    total = len(header) + len(data)
    return b"HPUB %s %d %d\r\n%s%s\r\n" % (subject, len(header), total, header, data)


HOSTILE = {
    "subject-not-utf8": lambda subject: _pub(subject + b".\xff", b'{"id":"x"}'),
    "reply-not-utf8": lambda subject: b"PUB %s _INBOX.\xfe 2\r\nhi\r\n" % subject,
    "header-block-cut-short": lambda subject: _hpub(subject, b"NATS/1.0", b"{}"),
    "status-not-utf8": lambda subject: _hpub(subject, b"NATS/1.0 \xff\xfe\xfd\r\n\r\n", b""),
}


def _register(app: App) -> Any:
    @app.task(name="sec.echo")
    async def echo(value: str = "ok") -> str:
        return value

    return echo


async def _reads(app: App) -> None:
    """The connection's read loop still runs (nats-py ends it on an exception)."""
    await asyncio.sleep(0.2)
    reading = app.nc._reading_task
    assert reading is not None and not reading.done()


async def test_a_worker_keeps_reading_after_an_undecodable_delivery(
    app: App, nats_url: str
) -> None:
    # A task's stored headers reach the worker as sent; its subject must be the lane's.
    echo = _register(app)
    async with running(app):
        await send_raw(nats_url, HOSTILE["header-block-cut-short"](b"TASKS.sec.echo"))
        await _reads(app)
        assert await (await echo.delay("after")).result(PROMPTLY) == "after"


async def test_a_revocation_key_that_is_not_utf8_does_not_deafen_workers(
    app: App, nats_url: str
) -> None:
    # A producer may write revocation records; a stored one is read by every worker start.
    echo = _register(app)
    await send_raw(nats_url, _pub(b"$KV.ebind-leases.revoked.\xff", b"{}"))
    async with running(app):
        await _reads(app)
        assert await (await echo.delay("before")).result(PROMPTLY) == "before"
        await send_raw(nats_url, _pub(b"$KV.ebind-leases.revoked.\xfe", b"{}"))
        await _reads(app)
        assert await (await echo.delay("after")).result(PROMPTLY) == "after"


@pytest.mark.parametrize("kind", sorted(HOSTILE))
async def test_a_producer_keeps_reading_after_an_undecodable_response(
    app: App, nats_url: str, kind: str
) -> None:
    echo = _register(app)
    worker_app = App("worker", nats_url=nats_url)
    _register(worker_app)
    async with worker_app, running(worker_app):
        subject = f"RESP.{app.client_id}.some-task".encode()
        await send_raw(nats_url, HOSTILE[kind](subject))
        await _reads(app)
        assert await (await echo.delay("after")).result(PROMPTLY) == "after"
