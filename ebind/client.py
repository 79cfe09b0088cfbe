"""The producer's IO: the one task publish path and the one response subscription.

Publishing pipelines (PERFORMANCE fact 3): every publish goes out with ``publish_async``
and its PubAck future is awaited with a bound, so concurrent ``delay()`` calls share round
trips while no accepted task goes unconfirmed. Results (fact 1) arrive on a single core
subscription per App, ``RESP.<client_id>.>``; a waiter that may have missed its message
asks the EBIND_RESP stream with a direct get — no consumer is ever created for a result.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import structlog

from ebind.errors import PayloadTooLarge, PublishFailed
from ebind.schedule import resolve_at, schedule_headers, scheduled_subject
from ebind.streams import RESP_STREAM, TASKS_STREAM, resp_subject, task_subject
from ebind.wire import TaskEnvelope, TaskResponse, decode_response, encoder

__all__ = ["HEADER_MSG_ID", "Publisher", "ResponseRouter", "message_size"]

log = structlog.get_logger("ebind.client")

HEADER_MSG_ID = "Nats-Msg-Id"
# "NATS/1.0\r\n" + the blank line closing the header block.
_HEADER_FRAME = len(b"NATS/1.0\r\n") + 2


def message_size(subject: str, payload: bytes, headers: dict[str, str]) -> int:
    """Bytes the server counts against max_payload: headers block plus payload."""
    header_bytes = sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())
    return len(payload) + (header_bytes + _HEADER_FRAME if headers else 0)


class Publisher:
    """Publishes task envelopes to EBIND_TASKS and checks every PubAck."""

    def __init__(self, nc: Any, js: Any, *, timeout: float) -> None:
        self._nc = nc
        self._js = js
        self._timeout = timeout

    def _frame(
        self,
        env: TaskEnvelope,
        msg_id: str,
        countdown: float | timedelta | None,
        eta: datetime | None,
    ) -> tuple[str, bytes, dict[str, str]]:
        data = encoder.encode(env)
        subject = task_subject(env.name, env.target)
        headers = {HEADER_MSG_ID: msg_id}
        at = resolve_at(countdown, eta, datetime.now(UTC))
        if at is not None:
            headers.update(schedule_headers(at, subject))
            subject = scheduled_subject(env.id)
        size = message_size(subject, data, headers)
        limit = int(self._nc.max_payload)
        if size > limit:
            raise PayloadTooLarge(
                f"task {env.name!r} ({env.id}) encodes to {size} bytes with its headers; the "
                f"server accepts at most {limit} (max_payload). Pass large data by reference "
                "(a URL, an object-store key) or raise max_payload in the server config",
                size=size,
                limit=limit,
            )
        return subject, data, headers

    async def publish(
        self,
        env: TaskEnvelope,
        *,
        msg_id: str | None = None,
        countdown: float | timedelta | None = None,
        eta: datetime | None = None,
    ) -> None:
        """Publish ``env`` (scheduled when countdown/eta is set); raises PublishFailed.

        Safe to retry with the same envelope id: inside the 5-minute duplicate window
        the server drops the repeat (``Nats-Msg-Id``), which resolves an unknown outcome.
        """
        mid = msg_id or env.id
        subject, data, headers = self._frame(env, mid, countdown, eta)
        try:
            fut = await self._js.publish_async(
                subject, data, headers=headers, wait_stall=self._timeout
            )
            ack = await asyncio.wait_for(fut, self._timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = "no confirmation" if isinstance(exc, TimeoutError) else repr(exc)
            raise PublishFailed(
                f"publishing task {env.name!r} ({env.id}) was not confirmed within "
                f"{self._timeout}s ({reason}); it may or may not be stored: retry with the same "
                "task_id within 5 minutes and the server drops the duplicate",
                task_id=env.id,
                subject=subject,
            ) from exc
        if ack.stream != TASKS_STREAM:
            raise PublishFailed(
                f"task {env.name!r} ({env.id}) was stored in stream {ack.stream!r}, not "
                f"{TASKS_STREAM}; another stream claims subject {subject!r}",
                task_id=env.id,
                subject=subject,
            )
        if ack.duplicate:
            log.info("task.duplicate", task_id=env.id, task_name=env.name, msg_id=mid, seq=ack.seq)


class ResponseRouter:
    """The App's one subscription on ``RESP.<client_id>.>``, resolving waiters by task id."""

    def __init__(self, nc: Any, js: Any, client_id: str) -> None:
        self._nc = nc
        self._js = js
        self.client_id = client_id
        self._pending: dict[str, asyncio.Future[TaskResponse]] = {}
        self._sub: Any = None
        self._epoch: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def start(self) -> None:
        """Subscribe; call once after connecting."""
        self._sub = await self._nc.subscribe(
            f"RESP.{self.client_id}.>", cb=self._on_msg, pending_msgs_limit=1_000_000
        )

    async def stop(self) -> None:
        """Unsubscribe; waiters keep their futures (they can still fall back to the stream)."""
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception as exc:  # closing anyway; nothing to recover
                log.debug("client.unsubscribe_failed", error=repr(exc))
        self.missed()

    async def _on_msg(self, msg: Any) -> None:
        try:
            resp = decode_response(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("task.response_undecodable", subject=msg.subject, error=str(exc))
            return
        waiter = self._pending.pop(resp.task_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(resp)

    def waiter(self, task_id: str) -> asyncio.Future[TaskResponse]:
        """The future resolved when ``task_id``'s response arrives (shared per task id)."""
        fut = self._pending.get(task_id)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._pending[task_id] = fut
        return fut

    def forget(self, task_id: str, fut: asyncio.Future[TaskResponse]) -> None:
        """Drop the waiter of a Future nobody holds any more."""
        if self._pending.get(task_id) is fut:
            del self._pending[task_id]

    @property
    def epoch(self) -> asyncio.Future[None]:
        """Resolves when responses may have been missed (reconnect, slow consumer)."""
        return self._epoch

    def missed(self) -> None:
        """Wake every waiter so it checks the stream for a response it may have missed."""
        old, self._epoch = self._epoch, asyncio.get_running_loop().create_future()
        if not old.done():
            old.set_result(None)

    async def fetch(self, task_id: str, client_id: str | None = None) -> TaskResponse | None:
        """The stored response of ``task_id`` from EBIND_RESP (direct get), or None."""
        from nats.js.errors import NotFoundError

        subject = resp_subject(client_id or self.client_id, task_id)
        try:
            raw = await self._js.get_last_msg(RESP_STREAM, subject, direct=True)
        except NotFoundError:
            return None
        if not raw.data:
            return None
        try:
            return decode_response(raw.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("task.response_undecodable", subject=subject, error=str(exc))
            return None
