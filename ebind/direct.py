"""Subscriptions whose messages go straight from the read loop to a plain function.

nats-py hands every message of a callback subscription to an ``asyncio.Queue`` and a task
per subscription that awaits the callback. For the few subscriptions that see one or two
messages per task (task deliveries, PubAcks, responses, KV replies) that queue hop was a
tenth of a worker's CPU per task. Their handlers only resolve futures or start tasks, so
they are called synchronously instead, in arrival order, from the connection's read loop.

Only connections made by :class:`DirectClient` (every connection ebind opens) dispatch this
way; on any other nats-py client :func:`subscribe_direct` falls back to a normal callback
subscription, so behaviour is the same, only slower.

:class:`DirectClient` also keeps its read loop alive through bytes nats-server relays but
nats-py cannot decode (a subject or reply that is not UTF-8, a malformed header block):
nats-py raises from its read loop on those, which ends the loop while the connection still
reports itself connected. Such a message is delivered with the undecodable bytes replaced
and without headers, and logged.
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

_parse_headers = Client._process_headers
"""nats-py's header parser, called unwrapped on the direct path (no extra frame)."""


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
        try:
            hdr = await _parse_headers(self, headers) if headers else None
            msg = self.msg_class(
                subject=subject.decode(),
                reply=reply.decode(),
                data=data,
                headers=hdr,
                _client=self,
                _sid=sid,
            )
        except Exception:  # hostile bytes: the tolerant path below says which
            hdr = await self._process_headers(headers) if headers else None
            msg = self._build_message(sid, subject, reply, data, hdr)
        try:
            handler(msg)
        except Exception as exc:
            # As nats-py does for a callback that raises: report it, keep reading.
            log.warning("nats.handler_failed", subject=redact(msg.subject), error=repr(exc))
            await self._report(exc)

    async def _report(self, exc: Exception) -> None:
        """Hand ``exc`` to the error callback; one that raises must not end the read loop."""
        try:
            await self._error_cb(exc)
        except Exception as cb_exc:
            log.warning("nats.error_callback_failed", error=redact(repr(cb_exc)))

    async def _process_headers(self, headers: Any) -> dict[str, str] | None:
        try:
            return await _parse_headers(self, headers)
        except Exception as exc:
            log.warning("nats.headers_undecodable", error=repr(exc), size=len(headers))
            return None

    def _build_message(
        self,
        sid: int,
        subject: bytes,
        reply: bytes,
        data: bytes,
        headers: dict[str, str] | None,
    ) -> Msg:
        try:
            subj, rep = subject.decode(), reply.decode()
        except UnicodeDecodeError:
            subj, rep = subject.decode(errors="replace"), reply.decode(errors="replace")
            log.warning("nats.subject_undecodable", subject=redact(subj), reply=redact(rep))
        return self.msg_class(
            subject=subj, reply=rep, data=data, headers=headers, _client=self, _sid=sid
        )

    def _remove_sub(self, sid: int, max_msgs: int = 0) -> None:
        super()._remove_sub(sid, max_msgs)
        self._direct.pop(sid, None)


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
