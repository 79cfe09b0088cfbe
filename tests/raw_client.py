"""A plain NATS client for tests that must send bytes nats-py would refuse or repair."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


async def send_raw(url: str, *frames: bytes) -> None:
    """Publish protocol ``frames`` as a plain client would and wait until the server took them."""
    where = urlsplit(url)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    try:
        await reader.readline()  # INFO
        writer.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n')
        writer.write(b"".join(frames) + b"PING\r\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5)
        assert line == b"PONG\r\n", line
    finally:
        writer.close()


async def store_raw(url: str, subject: bytes, header: bytes, data: bytes) -> None:
    """Store one message with exactly ``header`` as its header block (nats-py would fix it)."""
    size = len(header) + len(data)
    await send_raw(url, b"HPUB %s %d %d\r\n%s%s\r\n" % (subject, len(header), size, header, data))
