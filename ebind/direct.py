"""Subscriptions whose messages go straight from the read loop to a plain function.

nats-py hands every message of a callback subscription to an ``asyncio.Queue`` and a task
per subscription that awaits the callback. For the few subscriptions that see one or two
messages per task (task deliveries, PubAcks, responses, KV replies) that queue hop was a
tenth of a worker's CPU per task. Their handlers only resolve futures or start tasks, so
they are called synchronously instead, in arrival order, from the connection's read loop.

Only connections made by :class:`DirectClient` (every connection ebind opens) dispatch this
way; on any other nats-py client :func:`subscribe_direct` falls back to a normal callback
subscription, so behaviour is the same, only slower.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from ebind.logging import get_logger, redact

__all__ = ["DirectClient", "Handler", "subscribe_direct"]

log = get_logger("ebind.connection")

Handler = Callable[[Msg], None]
"""A handler of a direct subscription: called in the read loop, so it must not block."""


class DirectClient(Client):
    """nats-py's client, calling the handlers of direct subscriptions from its read loop."""

    def __init__(self) -> None:
        super().__init__()
        self._direct: dict[int, Handler] = {}

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        handler = self._direct.get(sid)
        if handler is None or sid not in self._subs:
            # Not direct, or unsubscribed (nats-py drops those): nats-py's own path.
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        hdr = await self._process_headers(headers) if headers else None
        msg = self._build_message(sid, subject, reply, data, hdr)
        try:
            handler(msg)
        except Exception as exc:
            # As nats-py does for a callback that raises: report it, keep reading.
            log.warning("nats.handler_failed", subject=redact(msg.subject), error=repr(exc))
            if self._error_cb is not None:
                await self._error_cb(exc)


async def subscribe_direct(
    nc: Any, subject: str, handler: Handler, *, pending_msgs_limit: int | None = None
) -> Any:
    """Subscribe ``handler`` to ``subject``, called from the read loop when ``nc`` allows it.

    The subscription is nats-py's own (unsubscribe and drain work as usual). A message that
    arrives before the handler is registered goes through nats-py's queue, in order;
    ``pending_msgs_limit`` bounds that queue (and every message on a plain nats-py client).
    """

    async def queued(msg: Msg) -> None:
        handler(msg)

    limits = {} if pending_msgs_limit is None else {"pending_msgs_limit": pending_msgs_limit}
    sub = await nc.subscribe(subject, cb=queued, **limits)
    direct = getattr(nc, "_direct", None)
    if isinstance(nc, DirectClient) and isinstance(direct, dict):
        direct[sub._id] = handler
    return sub
