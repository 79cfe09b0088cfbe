"""Reading the last value of every key under a subject filter without scanning the bucket.

``last_per_subject`` asks the stream for the newest message of each subject matching one
filter (``$KV.ebind-dags.<dag>.step.>``) with a batched direct get (``multi_last``), which
costs one request per 1024 keys and never touches other DAGs' keys. The server refuses a
``multi_last`` matching more than 1024 subjects (status 413) and a bucket without
``allow_direct`` has no direct-get responder; both fall back to a short-lived ordered
pull consumer filtered the same way, deleted as soon as it has been read.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from dataclasses import dataclass
from typing import Any

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from ebind._jsreq import reply_status
from ebind.logging import get_logger

__all__ = ["DirectReader", "KVMessage", "is_tombstone", "list_last"]

_log = get_logger("ebind.workflow.store")

# The server's cap on subjects one multi_last request may match (nats-server 2.11-2.15).
MULTI_LAST_LIMIT = 1024
_TOMBSTONE_OPS = frozenset({"DEL", "PURGE"})


@dataclass(frozen=True, slots=True)
class KVMessage:
    """The newest message of one subject: its subject, stream sequence and body."""

    subject: str
    seq: int
    data: bytes


class _Page:
    """The messages of one page of a batched direct get, until its closing status."""

    __slots__ = ("done", "msgs")

    def __init__(self, done: asyncio.Future[tuple[list[Any], dict[str, str]]]) -> None:
        self.done = done
        self.msgs: list[Any] = []

    def add(self, msg: Any) -> None:
        if self.done.done():
            return
        headers: dict[str, str] = msg.headers or {}
        # A stored record can carry any headers, a ``Status`` one too (see reply_status).
        if reply_status(headers) is not None:
            self.done.set_result((self.msgs, headers))
        else:
            self.msgs.append(msg)


class _Pull:
    """The messages one pull request delivers: until the batch, the last one, or a status."""

    __slots__ = ("batch", "done", "msgs")

    def __init__(self, done: asyncio.Future[None], batch: int) -> None:
        self.done = done
        self.batch = batch
        self.msgs: list[Any] = []

    def add(self, msg: Any) -> None:
        if self.done.done():
            return
        # Only the server's deliveries have an ack subject; its status replies (no messages,
        # request expired) have none, whatever headers a stored record carries.
        if not (msg.reply or "").startswith("$JS.ACK."):
            self.done.set_result(None)
            return
        self.msgs.append(msg)
        if len(self.msgs) >= self.batch or int(msg.metadata.num_pending) == 0:
            self.done.set_result(None)


class _FallbackError(Exception):
    """multi_last cannot serve this filter; use a consumer."""


def is_tombstone(headers: dict[str, str] | None) -> bool:
    if not headers:
        return False
    if headers.get("KV-Operation") in _TOMBSTONE_OPS:
        return True
    # Server-placed markers (TTL / max-age expiry) carry a reason instead of an operation.
    return "Nats-Marker-Reason" in headers


class DirectReader:
    """Batched direct gets against one stream, multiplexed over a single inbox subscription.

    Args:
        js: a nats-py JetStream context.
        stream: the stream to read (``KV_ebind-dags``).
        direct: whether the stream has ``allow_direct`` (else the consumer path is used).
        timeout: seconds to wait for each reply message.
    """

    def __init__(self, js: Any, stream: str, *, direct: bool, timeout: float = 5.0) -> None:
        self._js = js
        # nats-py keeps the connection on the JetStream context; the direct-get API is a
        # plain request/reply on it.
        self._nc: Any = js._nc
        self._stream = stream
        self._direct = direct
        self._timeout = timeout
        self._prefix = ""
        self._sub: Any = None
        self._pages: dict[str, _Page | _Pull] = {}
        self._ids = itertools.count()
        self._lock = asyncio.Lock()

    async def _ensure_sub(self) -> None:
        if self._sub is not None:
            return
        async with self._lock:
            if self._sub is not None:
                return
            # The connection's inbox prefix: a least-privileged user may subscribe only there.
            self._prefix = self._nc.new_inbox()

            async def route(msg: Any) -> None:
                page = self._pages.get(msg.subject.rsplit(".", 1)[-1])
                if page is not None:
                    page.add(msg)

            # One wildcard subscription for every request, so a listing costs no SUB/UNSUB.
            self._sub = await self._nc.subscribe(f"{self._prefix}.*", cb=route)

    async def close(self) -> None:
        """Drop the reply subscription."""
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.unsubscribe()

    async def last_per_subject(self, filter_subject: str) -> list[KVMessage]:
        """Newest live (non-tombstone) message of every subject matching ``filter_subject``."""
        if self._direct:
            try:
                return await self._multi_last(filter_subject)
            except _FallbackError as why:
                _log.debug("kv.list_fallback", filter=filter_subject, reason=str(why))
        return await self._consume(filter_subject)

    async def _multi_last(self, filter_subject: str) -> list[KVMessage]:
        await self._ensure_sub()
        token = str(next(self._ids))
        out: list[KVMessage] = []
        req: dict[str, Any] = {"multi_last": [filter_subject], "batch": MULTI_LAST_LIMIT}
        try:
            while True:
                page = self._pages[token] = _Page(asyncio.get_running_loop().create_future())
                await self._nc.publish(
                    f"$JS.API.DIRECT.GET.{self._stream}",
                    json.dumps(req).encode(),
                    reply=f"{self._prefix}.{token}",
                )
                last_seq, status = await self._read_page(page, out)
                if status.get("Status") == "404":
                    return out
                if status.get("Status") != "204":
                    raise _FallbackError(
                        f"status {status.get('Status')} {status.get('Description')}"
                    )
                if int(status.get("Nats-Num-Pending", "0")) == 0:
                    return out
                # Next page: same snapshot (up_to_seq), continuing after the last sequence.
                req["seq"] = last_seq + 1
                req["up_to_seq"] = int(status["Nats-UpTo-Sequence"])
        finally:
            self._pages.pop(token, None)

    async def _read_page(self, page: _Page, out: list[KVMessage]) -> tuple[int, dict[str, str]]:
        # One wait per page (a future), not one per message: asyncio.wait_for on a queue
        # read costs a Task per message.
        try:
            msgs, status = await asyncio.wait_for(page.done, self._timeout)
        except TimeoutError as exc:
            raise _FallbackError("direct get timed out") from exc
        last_seq = 0
        for msg in msgs:
            headers: dict[str, str] = msg.headers or {}
            last_seq = int(headers["Nats-Sequence"])
            if not is_tombstone(headers):
                out.append(KVMessage(headers["Nats-Subject"], last_seq, msg.data))
        return last_seq, status

    async def _consume(self, filter_subject: str) -> list[KVMessage]:
        config = ConsumerConfig(
            filter_subject=filter_subject,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=AckPolicy.NONE,
            mem_storage=True,
            num_replicas=1,
            # Deleted below; the threshold only matters if this process dies mid-read.
            inactive_threshold=30.0,
        )
        info = await self._js.add_consumer(self._stream, config)
        out: list[KVMessage] = []
        try:
            remaining = int(info.num_pending)
            if remaining == 0:
                return out
            # Deliveries keep their own subjects, so they get an inbox of their own; a raw
            # pull request, since nats-py's fetch takes a stored record's ``Status`` header
            # for the server's and fails (or ends) the read on it.
            current: list[_Pull] = []

            async def route(msg: Any) -> None:
                if current:
                    current[0].add(msg)

            inbox = self._nc.new_inbox()
            sub = await self._nc.subscribe(inbox, cb=route)
            try:
                while remaining > 0:
                    pull = _Pull(asyncio.get_running_loop().create_future(), min(remaining, 1024))
                    current[:] = [pull]
                    for msg in await self._pull(info.name, pull, inbox):
                        meta = msg.metadata
                        remaining = int(meta.num_pending)
                        if not is_tombstone(msg.headers):
                            out.append(KVMessage(msg.subject, int(meta.sequence.stream), msg.data))
            finally:
                await sub.unsubscribe()
        finally:
            try:
                await self._js.delete_consumer(self._stream, info.name)
            except Exception as exc:  # the inactive threshold removes it anyway
                _log.warning("kv.consumer_delete_failed", consumer=info.name, error=str(exc))
        return out

    async def _pull(self, consumer: str, pull: _Pull, inbox: str) -> list[Any]:
        expires = int(self._timeout * 1e9)
        await self._nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{consumer}",
            json.dumps({"batch": pull.batch, "expires": expires}).encode(),
            reply=inbox,
        )
        with contextlib.suppress(TimeoutError):  # a batch cut short: what came is kept
            await asyncio.wait_for(pull.done, self._timeout + 1.0)
        if not pull.msgs:
            raise TimeoutError(f"no messages from consumer {consumer} of {self._stream}")
        return pull.msgs


async def list_last(js: Any, stream: str, filter_subject: str) -> list[KVMessage]:
    """Newest live message of every subject matching ``filter_subject``, read once.

    For listings of a few keys (worker records, revocations, concurrency slots). nats-py's
    ``kv.watch`` can say "no more entries" before the ones the server already pushed have
    been read, so a listing through it can come back empty on a busy machine.
    """
    reader = DirectReader(js, stream, direct=True)
    try:
        return await reader.last_per_subject(filter_subject)
    finally:
        await reader.close()
