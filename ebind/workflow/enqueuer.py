"""Enqueuers: NatsEnqueuer (through the App's one publish path) and CaptureEnqueuer for tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from ebind.wire import TaskEnvelope

__all__ = ["CaptureEnqueuer", "NatsEnqueuer", "PublishFn"]


class PublishFn(Protocol):
    """The publish callable NatsEnqueuer delegates to (``App.publish_task`` is one)."""

    def __call__(self, env: TaskEnvelope, *, msg_id: str) -> Awaitable[None]:
        """Publish ``env`` with ``Nats-Msg-Id: msg_id``; raise if the server did not confirm."""
        ...


class NatsEnqueuer:
    """Places step envelopes on the TASKS stream through ``publish`` (size check, PubAck, msg-id).

    Args:
        publish: called as ``await publish(envelope, msg_id=...)``; the production one is
            ``App.publish_task``, which raises PayloadTooLarge / PublishFailed.
    """

    def __init__(self, publish: PublishFn) -> None:
        self._publish = publish

    async def enqueue(self, envelope: TaskEnvelope, *, msg_id: str | None = None) -> None:
        """Publish ``envelope`` with ``msg_id`` (default: envelope.id) for dedupe."""
        await self._publish(envelope, msg_id=msg_id or envelope.id)


FailHook = Callable[[TaskEnvelope, str], BaseException | None]
"""Return an exception to make that enqueue fail (nothing is recorded), or None."""


class CaptureEnqueuer:
    """Records every enqueue instead of publishing; dedupes by msg-id like the TASKS stream.

    Attributes:
        calls: every ``(envelope, msg_id)`` passed in, duplicates included.
        envelopes: the envelopes the stream would hold (first per msg-id), in order.
        duplicates: how many enqueues were dropped as duplicate msg-ids.
    """

    def __init__(self, *, fail: FailHook | None = None) -> None:
        self.calls: list[tuple[TaskEnvelope, str]] = []
        self.envelopes: list[TaskEnvelope] = []
        self.duplicates = 0
        self._seen: set[str] = set()
        self._fail = fail
        self._fail_next: list[BaseException] = []
        self._changed = asyncio.Condition()

    def fail_next(self, exc: BaseException, count: int = 1) -> None:
        """Make the next ``count`` enqueues raise ``exc`` (nothing recorded for them)."""
        self._fail_next.extend([exc] * count)

    async def enqueue(self, envelope: TaskEnvelope, *, msg_id: str | None = None) -> None:
        """Record ``envelope`` under ``msg_id`` (default: envelope.id)."""
        mid = msg_id or envelope.id
        if self._fail_next:
            raise self._fail_next.pop(0)
        if self._fail is not None:
            exc = self._fail(envelope, mid)
            if exc is not None:
                raise exc
        await asyncio.sleep(0)
        self.calls.append((envelope, mid))
        if mid in self._seen:
            self.duplicates += 1
        else:
            self._seen.add(mid)
            self.envelopes.append(envelope)
        async with self._changed:
            self._changed.notify_all()

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
        self.duplicates = 0

    async def wait_for(self, count: int) -> list[TaskEnvelope]:
        """Wait until at least ``count`` distinct envelopes were enqueued (bound it yourself)."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.envelopes) >= count)
        return list(self.envelopes)
