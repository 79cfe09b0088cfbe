"""Lean JetStream requests over one wildcard inbox: acknowledged publishes and direct gets.

nats-py's ``js.publish``, ``kv.get`` and ``kv.update`` each cost about 0.13-0.16 ms of
CPU: a fresh inbox token, ``asyncio.wait_for`` (a Task), ``json.loads`` into dataclasses,
KV ``Entry`` objects. A DAG step makes about ten such calls on its critical path, so on
one machine that CPU *is* the scheduling latency. Here a request is a core publish with a
reply subject under one wildcard inbox subscription per connection, a future in a dict,
one timer, and a msgspec decode of the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import msgspec

from ebind._denied import Violation, denial, denials_for
from ebind.direct import publish_nowait, subscribe_direct

__all__ = [
    "HEADER_EXPECTED_LAST_SUBJECT_SEQ",
    "HEADER_EXPECTED_STREAM",
    "PubAck",
    "Requests",
    "ack_error",
    "decode_ack",
    "expect_last_block",
    "reply_status",
    "requests_for",
]

HEADER_EXPECTED_STREAM = "Nats-Expected-Stream"
HEADER_EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
_STATUS = "Status"
_DESCRIPTION = "Description"
_NO_RESPONDERS = "503"
_NOT_FOUND = "404"
_END_OF_BATCH = "204"
_EXPECT_LAST_HEAD = f"NATS/1.0\r\n{HEADER_EXPECTED_LAST_SUBJECT_SEQ}: ".encode()
# JSStreamWrongLastSequenceErrF / JSStreamWrongLastSequenceConstantErr: a failed CAS.
WRONG_LAST_SEQUENCE = frozenset({10071, 10164})


def expect_last_block(seq: int) -> bytes:
    """The header block of an expected-last-subject-sequence publish (a KV CAS).

    Built directly: every CAS carries this one header, and the general encoder checks
    the header name with a regular expression on each publish.
    """
    return b"%s%d\r\n\r\n" % (_EXPECT_LAST_HEAD, seq)


class ApiError(msgspec.Struct, frozen=True):
    """The ``error`` object of a JetStream API reply."""

    code: int = 0
    err_code: int = 0
    description: str = ""


class PubAck(msgspec.Struct, frozen=True):
    """The server's reply to a JetStream publish."""

    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: ApiError | None = None


_ack_decoder = msgspec.json.Decoder(PubAck)


def ack_error(error: ApiError) -> BaseException:
    """The nats-py exception for an API error (the specific subclass for known codes)."""
    from nats.js.errors import APIError, KeyWrongLastSequenceError

    if error.err_code in WRONG_LAST_SEQUENCE:
        return KeyWrongLastSequenceError(description=error.description)
    try:  # from_error raises the subclass for known codes instead of returning it
        exc: BaseException = APIError.from_error(msgspec.structs.asdict(error))
    except APIError as raised:
        exc = raised
    return exc


def decode_ack(msg: Any) -> PubAck:
    """The PubAck in ``msg``; raises for no responders, undecodable or error replies."""
    headers = msg.headers
    if headers and headers.get(_STATUS) == _NO_RESPONDERS:
        from nats.js.errors import NoStreamResponseError

        raise NoStreamResponseError()
    ack = _ack_decoder.decode(msg.data)
    if ack.error is not None:
        raise ack_error(ack.error)
    return ack


class Requests:
    """Request/reply on one connection through a single ``<inbox>.*`` subscription.

    Args:
        nc: a connected nats-py client.
        timeout: seconds each request waits for its reply (then TimeoutError).
    """

    def __init__(self, nc: Any, *, timeout: float = 5.0) -> None:
        self._nc = nc
        self.timeout = timeout
        self._prefix = ""
        self._sub: Any = None
        self._ids = itertools.count(1)
        # token -> (reply future, request subject, loop-time deadline); the subject lets a
        # permission violation the server reports for it fail the request at once.
        # Insertion order is deadline order while ``timeout`` stays the same, so one timer
        # for the oldest deadline serves every request (see ``_sweep``).
        self._waiting: dict[str, tuple[asyncio.Future[Any], str, float]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        # The connection's loop (asking for the running loop costs a system call on 3.11).
        self._loop: asyncio.AbstractEventLoop | None = None
        # token -> a batched direct get collecting its several reply messages
        self._batches: dict[str, _Batch] = {}
        self._lock = asyncio.Lock()
        denials_for(nc).listen(self._denied)

    def _denied(self, violation: Violation) -> bool:
        hit = False
        waiting = [
            *((fut, subject) for fut, subject, _ in self._waiting.values()),
            *((b.done, b.subject) for b in self._batches.values()),
        ]
        for fut, subject in waiting:
            if not fut.done() and subject.lower() == violation.subject:
                fut.set_exception(denial(subject))
                hit = True
        return hit

    async def _ensure(self) -> None:
        if self._sub is not None:
            return
        async with self._lock:
            if self._sub is None:
                prefix = self._nc.new_inbox() + "."
                self._sub = await subscribe_direct(
                    self._nc, prefix + "*", self._on_reply, pending_msgs_limit=1_000_000
                )
                self._prefix = prefix

    def _on_reply(self, msg: Any) -> None:
        token = msg.subject[len(self._prefix) :]
        entry = self._waiting.pop(token, None)
        if entry is not None:
            if not entry[0].done():
                entry[0].set_result(msg)
            return
        batch = self._batches.get(token)
        if batch is not None:
            batch.add(msg)

    async def request(
        self,
        subject: str,
        data: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        block: bytes = b"",
    ) -> Any:
        """Send ``data`` to ``subject`` and return the reply message.

        ``block``, when given, is ``headers`` already encoded (see ``expect_last_block``).

        Raises:
            TimeoutError: no reply within ``timeout`` seconds.
            ebind.errors.PermissionDenied: the server refused this user the publish.
        """
        if self._sub is None:
            await self._ensure()
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        token = str(next(self._ids))
        fut: asyncio.Future[Any] = loop.create_future()
        deadline = loop.time() + self.timeout
        self._waiting[token] = (fut, subject, deadline)
        if self._sweeper is None:
            self._sweeper = loop.call_at(deadline, self._sweep)
        try:
            # Buffered straight onto the connection (no nats-py publish coroutines); in any
            # unusual state nats-py's own publish takes it and raises what it raises.
            reply = self._prefix + token
            if not publish_nowait(self._nc, subject, data, reply, headers, block=block):
                await self._nc.publish(subject, data, reply=reply, headers=headers)
            return await fut
        finally:
            waiting = self._waiting
            waiting.pop(token, None)
            if not waiting and self._sweeper is not None:
                # Idle: a pending timer would keep this object (and the connection) alive.
                self._sweeper.cancel()
                self._sweeper = None

    def _sweep(self) -> None:
        """Fail every request past its deadline; re-arm for the oldest one still waiting.

        One timer instead of one per request: a timer each (created, pushed on the loop's
        heap, cancelled) was a tenth of a KV write's CPU. A request whose deadline is
        earlier than an older one's (``timeout`` lowered meanwhile) fails at the latest
        when that older one's deadline passes.
        """
        self._sweeper = None
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        for fut, subject, deadline in self._waiting.values():
            if deadline > now:
                self._sweeper = loop.call_at(deadline, self._sweep)
                return
            # set_exception only schedules the waiter, which removes its own entry later.
            _expire(fut, subject)

    async def publish(
        self,
        subject: str,
        data: bytes,
        headers: dict[str, str] | None = None,
        *,
        block: bytes = b"",
    ) -> PubAck:
        """A JetStream publish; returns the PubAck or raises the server's error.

        ``block``, when given, is ``headers`` already encoded.

        Raises:
            TimeoutError: no PubAck in time (the message may or may not be stored).
            nats.js.errors.NoStreamResponseError: no stream (leader) took the message.
            nats.js.errors.KeyWrongLastSequenceError: an expected-sequence header failed.
            nats.js.errors.APIError: any other error the server reported.
        """
        return decode_ack(await self.request(subject, data, headers, block=block))

    async def get_last(self, stream: str, subject: str) -> Any | None:
        """The newest message on ``subject`` in ``stream`` (direct get), None if there is none.

        Needs ``allow_direct`` on the stream. Tombstones are returned as they are (their
        headers tell).

        Raises:
            TimeoutError: no reply in time.
            nats.errors.NoRespondersError: the stream has no responder (no leader yet).
        """
        msg = await self.request(f"$JS.API.DIRECT.GET.{stream}.{subject}")
        headers = msg.headers
        status = reply_status(headers)
        if status is None:
            return msg
        if status == _NOT_FOUND:
            return None
        if status == _NO_RESPONDERS:
            import nats.errors

            raise nats.errors.NoRespondersError()
        from nats.js.errors import APIError

        raise APIError(code=int(status), description=headers.get(_DESCRIPTION, ""))

    async def get_batch(self, stream: str, subjects: list[str]) -> list[Any]:
        """The newest message of each of ``subjects`` in one batched direct get.

        Subjects without a message are left out; the messages come in stream order (their
        ``Nats-Subject`` header tells which is which). Tombstones are returned as they are.
        At most 1024 subjects (the server's limit for one request).

        Raises:
            TimeoutError: the reply did not complete in time.
            nats.errors.NoRespondersError: the stream has no responder (no leader yet).
            nats.js.errors.APIError: the server refused the request.
        """
        if self._sub is None:
            await self._ensure()
        loop = asyncio.get_running_loop()
        token = str(next(self._ids))
        subject = f"$JS.API.DIRECT.GET.{stream}"
        batch = _Batch(loop.create_future(), subject)
        self._batches[token] = batch
        timer = loop.call_later(self.timeout, _expire, batch.done, subject)
        body = _batch_request.encode(_BatchRequest(multi_last=subjects, batch=len(subjects)))
        try:
            await self._nc.publish(subject, body, reply=self._prefix + token)
            return await batch.done
        finally:
            timer.cancel()
            self._batches.pop(token, None)


class _BatchRequest(msgspec.Struct, frozen=True):
    """A batched direct get of the last message of each subject."""

    multi_last: list[str]
    batch: int


_batch_request = msgspec.json.Encoder()


class _Batch:
    """The messages of one batched direct get, until the server's closing status."""

    __slots__ = ("done", "msgs", "subject")

    def __init__(self, done: asyncio.Future[list[Any]], subject: str) -> None:
        self.done = done
        self.subject = subject
        self.msgs: list[Any] = []

    def add(self, msg: Any) -> None:
        if self.done.done():
            return
        headers = msg.headers
        status = reply_status(headers)
        if status is None:
            self.msgs.append(msg)
        elif status in (_END_OF_BATCH, _NOT_FOUND):  # 404: none of the subjects has one
            self.done.set_result(self.msgs)
        elif status == _NO_RESPONDERS:
            import nats.errors

            self.done.set_exception(nats.errors.NoRespondersError())
        else:
            from nats.js.errors import APIError

            description = headers.get(_DESCRIPTION, "") if headers else ""
            self.done.set_exception(APIError(code=int(status), description=description))


def reply_status(headers: dict[str, str] | None) -> str | None:
    """The server's status of a direct-get reply; None for a stored message.

    A stored message can carry any headers, a ``Status`` one too. The server appends
    ``Nats-Stream``, ``Nats-Subject`` and ``Nats-Sequence`` to every message it returns,
    each to the block as stored: a stored block whose last line is not terminated swallows
    the first of them (and can even start with an inline status), never the later ones.
    ``Nats-Subject`` alone proves nothing: a no-responders reply names the request's.
    """
    if not headers or "Nats-Stream" in headers or "Nats-Sequence" in headers:
        return None
    return headers.get(_STATUS)


def _expire(fut: asyncio.Future[Any], subject: str) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError(f"no reply to a request on {subject!r}"))


_ATTR = "_ebind_requests"


def requests_for(nc: Any) -> Requests:
    """The one Requests of connection ``nc`` (created on first use).

    It is kept on the connection object itself: a Requests refers to its connection (and
    its subscription does), so a weak mapping keyed by the connection would never let go.
    """
    got: Requests | None = getattr(nc, _ATTR, None)
    if got is None:
        got = Requests(nc)
        # A connection type that takes no attributes just gets no sharing.
        with contextlib.suppress(AttributeError):
            setattr(nc, _ATTR, got)
    return got
