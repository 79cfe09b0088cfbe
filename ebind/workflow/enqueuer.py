"""Enqueuers: NatsEnqueuer (through the App's one publish path) and CaptureEnqueuer for tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from ebind._jsreq import PubAck
from ebind.wire import TaskEnvelope

__all__ = ["CaptureEnqueuer", "NatsEnqueuer", "PublishFn"]


class PublishFn(Protocol):
    """The publish callable NatsEnqueuer delegates to (``App.publish_task`` is one)."""

    def __call__(self, env: TaskEnvelope, *, msg_id: str) -> Awaitable[PubAck | None]:
        """Publish ``env`` with ``Nats-Msg-Id: msg_id``; raise if the server did not confirm.

        Returns the PubAck when the publish path reports it (None: not known).
        """
        ...


class NatsEnqueuer:
    """Places step envelopes on the TASKS stream through ``publish`` (size check, PubAck, msg-id).

    Args:
        publish: called as ``await publish(envelope, msg_id=...)``; the production one is
            ``App.publish_task``, which raises PayloadTooLarge / PublishFailed.
    """

    def __init__(self, publish: PublishFn) -> None:
        self._publish = publish

    async def enqueue(self, envelope: TaskEnvelope, *, msg_id: str | None = None) -> PubAck | None:
        """Publish ``envelope`` with ``msg_id`` (default: envelope.id); returns its PubAck."""
        return await self._publish(envelope, msg_id=msg_id or envelope.id)


FailHook = Callable[[TaskEnvelope, str], BaseException | None]
"""Return an exception to make that enqueue fail (nothing is recorded), or None."""


class CaptureEnqueuer:
    """Records every enqueue instead of publishing; dedupes by msg-id like the TASKS stream.

    Attributes:
        calls: every ``(envelope, msg_id)`` passed in, duplicates included.
        envelopes: the envelopes the stream would hold (first per msg-id), in order.
        duplicates: how many enqueues were dropped as duplicate msg-ids.

    Each held envelope gets a sequence (its 1-based position in ``envelopes``), returned
    in a PubAck like the stream's; :meth:`present` answers the sweep's look-up of it
    until :meth:`lose` drops the message.
    """

    def __init__(self, *, fail: FailHook | None = None) -> None:
        self.calls: list[tuple[TaskEnvelope, str]] = []
        self.envelopes: list[TaskEnvelope] = []
        self.duplicates = 0
        self._seen: dict[str, int] = {}
        self._lost: set[int] = set()
        self._fail = fail
        self._fail_next: list[BaseException] = []
        self._changed = asyncio.Condition()

    def fail_next(self, exc: BaseException, count: int = 1) -> None:
        """Make the next ``count`` enqueues raise ``exc`` (nothing recorded for them)."""
        self._fail_next.extend([exc] * count)

    async def enqueue(self, envelope: TaskEnvelope, *, msg_id: str | None = None) -> PubAck | None:
        """Record ``envelope`` under ``msg_id`` (default: envelope.id); no PubAck to return."""
        mid = msg_id or envelope.id
        if self._fail_next:
            raise self._fail_next.pop(0)
        if self._fail is not None:
            exc = self._fail(envelope, mid)
            if exc is not None:
                raise exc
        await asyncio.sleep(0)
        self.calls.append((envelope, mid))
        seq = self._seen.get(mid)
        duplicate = seq is not None
        if seq is not None:
            self.duplicates += 1
        else:
            self.envelopes.append(envelope)
            seq = self._seen[mid] = len(self.envelopes)
        async with self._changed:
            self._changed.notify_all()
        return PubAck(stream="EBIND_TASKS", seq=seq, duplicate=duplicate)

    async def present(self, seq: int, expected_msg_id: str) -> bool:
        """Whether the message stored at ``seq`` carries ``expected_msg_id`` and is not lost."""
        return self._seen.get(expected_msg_id) == seq and seq not in self._lost

    def lose(self, msg_id: str) -> None:
        """Drop the message stored under ``msg_id`` (as if deleted from the stream)."""
        seq = self._seen.get(msg_id)
        if seq is None:
            raise KeyError(f"no message was stored under msg-id {msg_id!r}")
        self._lost.add(seq)

    def ids(self) -> list[str]:
        """Envelope ids the stream would hold, in enqueue order."""
        return [e.id for e in self.envelopes]

    def step_ids(self) -> list[str]:
        """Step ids of the held envelopes, in enqueue order."""
        return [e.step_id for e in self.envelopes]

    def clear(self) -> None:
        """Forget everything recorded (msg-ids included)."""
        self.calls.clear()
        self.envelopes.clear()
        self._seen.clear()
        self._lost.clear()
        self.duplicates = 0

    async def wait_for(self, count: int) -> list[TaskEnvelope]:
        """Wait until at least ``count`` distinct envelopes were enqueued (bound it yourself)."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.envelopes) >= count)
        return list(self.envelopes)
