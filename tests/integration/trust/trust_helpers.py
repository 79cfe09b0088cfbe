"""Helpers for the signing / payload-codec tests: read stream messages raw."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from ebind.app import App

OpenApp = Callable[..., Awaitable[App]]
"""The ``open_app`` fixture: ``await open_app(**App options)`` gives a connected App."""


async def raw_messages(app: App, stream: str) -> list[bytes]:
    """Headers and body of every message ``stream`` holds, read by sequence (no consumer)."""
    info = await app.js.stream_info(stream)
    out: list[bytes] = []
    for seq in range(int(info.state.first_seq or 1), int(info.state.last_seq or 0) + 1):
        with contextlib.suppress(Exception):  # deleted or acked (work queue) in between
            msg = await app.js.get_msg(stream, seq)
            headers = "".join(f"{k}: {v}\n" for k, v in (msg.headers or {}).items())
            out.append(headers.encode() + bytes(msg.data or b""))
    return out
