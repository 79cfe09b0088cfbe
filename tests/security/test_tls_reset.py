"""A connection reset before any TLS was spoken is a network failure, not a TLS refusal.

A server restarting (its listener closed with connections still queued) or a proxy with no
backend yet resets a new connection before the server's INFO. Over TLS that must be retried
like any unreachable server, while a reset after the handshake (the server refusing the
client certificate) still fails at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pki_helpers import make_pki
from secured import Secured, make_app, options, start_tls

from ebind.connection import ConnectionSettings, nats_options, open_connection
from ebind.errors import ConnectionFailed

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def tls_node(tmp_path: Path) -> AsyncIterator[Secured]:
    made = start_tls(tmp_path)
    try:
        yield made
    finally:
        made.node.shutdown()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def resetting_front(target: str, resets: int) -> AsyncIterator[tuple[str, list[int]]]:
    """A loopback proxy to ``target`` that resets its first ``resets`` connections at once."""
    host, port = target.rsplit("//", 1)[1].rsplit(":", 1)
    accepted = [0]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        if accepted[0] <= resets:
            _reset(writer)  # no INFO
            return
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    front_port = server.sockets[0].getsockname()[1]
    try:
        yield f"tls://127.0.0.1:{front_port}", accepted
    finally:
        server.close()


async def test_a_reset_before_tls_is_retried_within_the_connect_wait(tls_node: Secured) -> None:
    async with resetting_front(tls_node.node.client_url, resets=2) as (url, accepted):
        app = make_app(url, "producer", connect_wait=15, **options(tls_node.good))
        await app.connect()
        try:
            assert accepted[0] >= 3
            assert app.nc.is_connected
        finally:
            await app.close()


async def test_a_reset_before_tls_is_reported_as_unreachable(tls_node: Secured) -> None:
    async with resetting_front(tls_node.node.client_url, resets=1000) as (url, _):
        opts = {**nats_options(tls_node.good), "connect_timeout": 1}
        with pytest.raises(ConnectionFailed) as err:
            await open_connection([url], opts, settings=tls_node.good, wait=1.0)
    assert err.value.kind != "tls"
    assert "certificate" not in str(err.value)


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def test_a_reset_after_the_handshake_still_fails_at_once(tmp_path: Path) -> None:
    # What a server refusing the client certificate after a TLS 1.3 handshake looks like
    # when the reset wins the race with its alert: INFO, a complete handshake, then a reset.
    pki = make_pki(tmp_path / "pki")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    accepted = [0]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        info = {"server_id": "fake", "version": "2.15.1", "tls_required": True, "proto": 1}
        writer.write(b"INFO " + json.dumps(info).encode() + b"\r\n")
        await writer.drain()
        try:
            await writer.start_tls(server_ctx)
            await reader.readline()  # CONNECT: the client's side of the handshake is done
        except (ssl.SSLError, ConnectionError):
            return
        _reset(writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"tls://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    settings = ConnectionSettings(tls_ca=str(pki.ca))
    try:
        start = time.monotonic()
        with pytest.raises(ConnectionFailed) as err:
            await open_connection([url], nats_options(settings), settings=settings, wait=15)
        took = time.monotonic() - start
    finally:
        server.close()
    assert err.value.kind == "tls"
    assert took < 5 and accepted[0] == 1
