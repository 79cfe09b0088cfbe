"""Subscriptions whose messages go straight from the read loop to a plain function.

nats-py hands every message of a callback subscription to an ``asyncio.Queue`` and a task
per subscription that awaits the callback. For the few subscriptions that see one or two
messages per task (task deliveries, PubAcks, responses, KV replies) that queue hop was a
tenth of a worker's CPU per task. Their handlers only resolve futures or start tasks, so
they are called synchronously instead, in arrival order, from the connection's read loop.

The same client buffers the publishes of the hot paths (responses, acks, pull requests,
task publishes) without nats-py's four coroutine layers per publish: :func:`publish` and
:func:`ack` append the protocol command to nats-py's pending buffer and wake its flusher,
which writes it with everything else buffered in the same loop round. Anything unusual
(not connected, a full buffer, an oversized payload) takes nats-py's own path.

Only connections made by :class:`DirectClient` (every connection ebind opens) dispatch this
way; on any other nats-py client :func:`subscribe_direct` falls back to a normal callback
subscription and the publishes to nats-py's, so behaviour is the same, only slower.

:class:`DirectClient` also keeps its read loop alive through bytes nats-server relays but
nats-py cannot decode (a subject or reply that is not UTF-8, a malformed header block):
nats-py raises from its read loop on those, which ends the loop while the connection still
reports itself connected. Such a message is delivered with the undecodable bytes replaced
and without headers, and logged.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

from nats import errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from ebind._parse import DirectParser, fits
from ebind.logging import get_logger, redact

__all__ = [
    "DirectClient",
    "DirectMsg",
    "Handler",
    "ack",
    "header_block",
    "publish",
    "publish_nowait",
    "subscribe_direct",
    "tls_up",
]

log = get_logger("ebind.connection")

Handler = Callable[[Msg], None]
"""A handler of a direct subscription: called in the read loop, so it must not block."""

# What nats-py refuses in a published subject (a CR or LF would inject protocol commands).
_BAD_SUBJECT = re.compile(r"[ \t\r\n]")
# Header names nats-py accepts (HTTP tokens); values lose CR and LF the way nats-py does it.
_HEADER_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NEWLINES = str.maketrans({"\r": " ", "\n": " "})
_ACK = b"+ACK"


def header_block(headers: dict[str, str]) -> bytes:
    """The ``NATS/1.0`` header block nats-py would write for ``headers`` (same checks)."""
    parts = [b"NATS/1.0\r\n"]
    for k, v in headers.items():
        key = k.strip()
        if not key:
            continue
        if not _HEADER_KEY.fullmatch(key):
            from nats.errors import BadHeaderError

            raise BadHeaderError(key)
        parts.append(f"{key}: {v.strip().translate(_NEWLINES)}\r\n".encode())
    parts.append(b"\r\n")
    return b"".join(parts)


class DirectMsg(Msg):
    """nats-py's ``Msg``, its header block parsed on the first read of ``headers``.

    Most deliveries carry only a ``Nats-Msg-Id`` header nobody on the worker reads, and
    nats-py's parser is pure Python; :attr:`raw_headers` lets a reader check for a header's
    name before paying for the parse.
    """

    def __init__(
        self, client: Client, sid: int, subject: str, reply: str, data: bytes, raw: bytes
    ) -> None:
        # The fields nats-py's dataclass __init__ sets, minus the parse.
        self._client = client
        self._sid = sid
        self.subject = subject
        self.reply = reply
        self.data = data
        self._metadata = None
        self._ackd = False
        self._raw: bytes | None = raw
        self._block = raw
        self._parsed: dict[str, str] | None = None

    @property
    def raw_headers(self) -> bytes | None:
        """The header block as received (empty when none), None once ``headers`` was read."""
        return self._raw

    @property
    def header_block(self) -> bytes:
        """The header block as received (empty when none), kept after ``headers`` was read."""
        return self._block

    @property
    def headers(self) -> dict[str, str] | None:
        """The message's headers (None when it has none), parsed on the first read."""
        raw = self._raw
        if raw is not None:
            self._raw = None
            if raw:
                self._parsed = _parse_headers(self._client, raw)
        return self._parsed

    @headers.setter
    def headers(self, value: dict[str, str] | None) -> None:
        self._raw = None
        self._parsed = value


def _parse_headers(client: Client, raw: bytes) -> dict[str, str] | None:
    """nats-py's own header parsing, run to completion without a loop round.

    It only suspends to report a malformed block to the error callback; such a block
    reads as no headers, as nats-py leaves it.
    """
    coro = client._process_headers(raw)
    try:
        coro.send(None)
    except StopIteration as done:
        parsed: dict[str, str] | None = done.value
        return parsed
    coro.close()
    log.warning("nats.headers_unreadable")
    return None


def tls_up(nc: Any) -> bool:
    """Whether ``nc``'s transport finished a TLS handshake."""
    writer = getattr(getattr(nc, "_transport", None), "_io_writer", None)
    extra = getattr(writer, "get_extra_info", None)
    return extra is not None and extra("ssl_object") is not None


def _plain_allowed(server: Any) -> bool:
    """A WebSocket server: its TLS is the URL's (``wss://``), not the NATS upgrade."""
    return server is not None and server.uri.scheme in ("ws", "wss")


class DirectClient(Client):
    """nats-py's client, calling the handlers of direct subscriptions from its read loop."""

    def __init__(self) -> None:
        super().__init__()
        self._direct: dict[int, Handler] = {}
        # The connection's loop, for the flusher's wake-up futures (asking for the running
        # loop is a getpid system call on Python 3.11).
        self._waker_loop: asyncio.AbstractEventLoop | None = None
        if fits(self._ps):  # a nats-py whose parser keeps the state ours shares
            self._ps = DirectParser(self)

    def _connect_command(self) -> bytes:
        """The CONNECT line, refused when TLS was asked for and the connection is plain.

        nats-py upgrades to TLS only when the server's greeting asks for it, so a server
        (or anything pretending to be one) that does not would receive the credentials in
        the clear although the client was given a CA, a certificate or a ``tls://`` URL.
        """
        server = self._current_server
        wants_tls = self.options.get("tls") is not None or (
            server is not None and server.uri.scheme == "tls"
        )
        if wants_tls and not _plain_allowed(server) and not tls_up(self):
            raise errors.Error(
                "nats: secure connection required: the server did not start TLS, so no "
                "credentials were sent"
            )
        return super()._connect_command()

    def publish_nowait(
        self,
        subject: str,
        payload: bytes,
        reply: str = "",
        headers: bytes = b"",
        *,
        checked: bool = True,
    ) -> bool:
        """Buffer one publish and wake the flusher; False when nats-py's path must take it.

        ``headers`` is a ready header block (:func:`header_block`). Taken here only while
        connected, within max_payload and with room in the pending buffer; the command and
        the accounting are what nats-py's ``publish`` produces. ``checked=False`` skips the
        whitespace check of the subjects, for a subject the server itself sent (an ack
        subject, cut from a protocol line at whitespace).
        """
        if self._status != Client.CONNECTED or not subject:
            return False
        if checked and (_BAD_SUBJECT.search(subject) or (reply and _BAD_SUBJECT.search(reply))):
            return False
        size = len(payload)
        if size > self._max_payload:
            return False
        if headers:
            hlen = len(headers)
            line = f"HPUB {subject} {reply} {hlen} {hlen + size}\r\n".encode()
            cmd = b"".join((line, headers, payload, b"\r\n"))
        else:
            cmd = b"".join((f"PUB {subject} {reply} {size}\r\n".encode(), payload, b"\r\n"))
        pending = self._pending
        queue = self._flush_queue
        total = self._pending_data_size + len(cmd)
        flusher = self._flusher_task
        if (
            queue is None
            or flusher is None
            or flusher.done()
            or (0 < self._max_pending_size < total)
        ):
            return False
        pending.append(cmd)
        self._pending_data_size = total
        stats = self.stats
        stats["out_msgs"] += 1
        stats["out_bytes"] += size
        if queue.empty():
            # What nats-py's publish does: one wake-up per flush round, not per publish.
            queue.put_nowait(self._flush_waker())
        return True

    def _flush_waker(self) -> asyncio.Future[None]:
        loop = self._waker_loop
        if loop is None:
            loop = self._waker_loop = asyncio.get_running_loop()
        return loop.create_future()

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        done = self._dispatch_now(sid, subject, reply, data, headers)
        if done is False:
            # Not direct, or unsubscribed (nats-py drops those): nats-py's own path.
            await super()._process_msg(sid, subject, reply, data, headers)
        elif done is not True:
            await self._report(done)

    def _dispatch_now(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> bool | Exception:
        """Hand a message of a direct subscription to its handler.

        False when the subscription is not direct (nats-py's path takes it); what the
        handler raised, for the error callback, when it failed; else True.
        """
        handler = self._direct.get(sid)
        if handler is None or sid not in self._subs:
            return False
        stats = self.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        try:
            subj, rep = subject.decode(), reply.decode()
        except UnicodeDecodeError:  # hostile bytes: delivered replaced, and logged
            subj, rep = _tolerant(subject, reply)
        msg = DirectMsg(self, sid, subj, rep, data, headers or b"")
        try:
            handler(msg)
        except Exception as exc:
            # As nats-py does for a callback that raises: report it, keep reading.
            log.warning("nats.handler_failed", subject=redact(msg.subject), error=repr(exc))
            return exc
        return True

    async def _report(self, exc: Exception) -> None:
        """Hand ``exc`` to the error callback; one that raises must not end the read loop."""
        try:
            await self._error_cb(exc)
        except Exception as cb_exc:
            log.warning("nats.error_callback_failed", error=redact(repr(cb_exc)))

    async def _process_headers(self, headers: Any) -> dict[str, str] | None:
        try:
            parsed: dict[str, str] | None = await super()._process_headers(headers)
        except Exception as exc:
            log.warning("nats.headers_undecodable", error=repr(exc), size=len(headers))
            return None
        return parsed

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
            subj, rep = _tolerant(subject, reply)
        return self.msg_class(
            subject=subj, reply=rep, data=data, headers=headers, _client=self, _sid=sid
        )

    def _remove_sub(self, sid: int, max_msgs: int = 0) -> None:
        super()._remove_sub(sid, max_msgs)
        self._direct.pop(sid, None)


def _tolerant(subject: bytes, reply: bytes) -> tuple[str, str]:
    """Subject and reply with undecodable bytes replaced (logged): nats-py's decode raises."""
    subj, rep = subject.decode(errors="replace"), reply.decode(errors="replace")
    log.warning("nats.subject_undecodable", subject=redact(subj), reply=redact(rep))
    return subj, rep


def publish_nowait(
    nc: Any,
    subject: str,
    payload: bytes,
    reply: str = "",
    headers: dict[str, str] | None = None,
    *,
    block: bytes = b"",
) -> bool:
    """Buffer a publish on a :class:`DirectClient`; False when ``nc.publish`` must take it.

    ``block`` is ``headers`` already encoded by :func:`header_block` (one fewer encoding
    for a header that is the same on every publish).
    """
    if not isinstance(nc, DirectClient):
        return False
    if headers and not block:
        block = header_block(headers)
    return nc.publish_nowait(subject, payload, reply, block)


async def publish(
    nc: Any, subject: str, payload: bytes, reply: str = "", headers: dict[str, str] | None = None
) -> None:
    """``nc.publish(...)``, buffered directly on a :class:`DirectClient` when it can be."""
    if not publish_nowait(nc, subject, payload, reply, headers):
        await nc.publish(subject, payload, reply=reply, headers=headers)


async def ack(msg: Msg) -> None:
    """``msg.ack()``, buffered directly when the message came through a :class:`DirectClient`."""
    nc = getattr(msg, "_client", None)
    if (
        isinstance(nc, DirectClient)
        and not msg._ackd
        and msg.reply
        and nc.publish_nowait(msg.reply, _ACK, checked=False)
    ):
        msg._ackd = True
        return
    await msg.ack()


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
