"""NatsBus: the EventBus over the work-queue stream EBIND_DAG_EVENTS.

Publishing awaits the PubAck. Subscribing binds the shared durable pull consumer
``ebind-scheduler`` (explicit ack, ack_wait 30 s, at most ``EVENT_MAX_DELIVER`` deliveries,
see :mod:`ebind.worker.advisory`), so each event is handled by one scheduler cluster-wide;
the worker's lean puller keeps pull requests open for no more events than there are free
handler slots, each expiring quickly, and ``stop()`` drains the delivery inbox (late
events are nak'd at once). Every event is checked by :mod:`ebind.workflow.event_check`
first: one that cannot be decoded, nests too deep or names bad ids is dead-lettered with
its raw bytes and terminated.
``tap()`` watches events live through a core subscription, which takes nothing from the
work queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Self

import nats.errors
import nats.js.errors
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NoStreamResponseError

from ebind._jsreq import HEADER_EXPECTED_STREAM, requests_for
from ebind.dlq import publish_dead_letter
from ebind.errors import PublishFailed
from ebind.logging import get_logger
from ebind.streams import DAG_EVENTS_STREAM, SCHEDULER_DURABLE, dlq_subject
from ebind.wire import DLQEntry, TaskError
from ebind.worker import advisory
from ebind.worker.pull import Budget, Puller
from ebind.workflow.event_check import EVENTS_DLQ_NAME, admit_event
from ebind.workflow.protocols import EventHandler
from ebind.workflow.types import Event

__all__ = ["NatsBus", "NatsDelivery", "NatsSubscription"]

_log = get_logger("ebind.workflow.bus")
DLQ_PUBLISH_TIMEOUT = 5.0

EVENTS_MAX_AGE = 24 * 3600.0
# The durable plus a few operator consumers; an explicit cap bounds server state.
EVENTS_MAX_CONSUMERS = 16


class NatsDelivery:
    """Acknowledgement handle of one JetStream message; only the first ack/nak/term counts."""

    def __init__(self, msg: Any) -> None:
        self._msg = msg
        self.subject: str = msg.subject
        self.num_delivered: int = int(msg.metadata.num_delivered)
        self.settled = False

    async def ack(self) -> None:
        """The event was handled."""
        if not self.settled:
            self.settled = True
            await self._msg.ack()

    async def nak(self, delay: float | None = None) -> None:
        """Redeliver the event after ``delay`` seconds."""
        if not self.settled:
            self.settled = True
            await self._msg.nak(delay=delay)

    async def term(self) -> None:
        """Never redeliver (poison event)."""
        if not self.settled:
            self.settled = True
            await self._msg.term()


class NatsSubscription:
    """Pull requests kept open on the shared durable; each event runs in its own task.

    Events arrive through the worker's lean puller (``ebind.worker.pull``): at most
    ``concurrency`` events are requested or running at once, requests expire after
    ``fetch_expiry`` and are topped up as handlers finish, and no per-event Task is
    spent on fetching (nats-py's ``fetch`` costs several).
    """

    def __init__(self, bus: NatsBus, nc: Any, handler: EventHandler, concurrency: int) -> None:
        self._bus = bus
        self._handler = handler
        self._budget = Budget(concurrency)
        self._running: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._recreating: asyncio.Task[None] | None = None
        self._puller = Puller(
            nc,
            stream=bus.stream,
            durable=bus.durable,
            budget=self._budget,
            on_msg=self._received,
            expires=bus.fetch_expiry,
            on_gone=self._gone,
        )

    async def start(self) -> None:
        """Open the delivery inbox and start requesting events."""
        await self._puller.start()

    async def stop(self) -> None:
        """Stop requesting, let running handlers finish, hand late deliveries back."""
        if self._stopping:
            return
        self._stopping = True
        if self._recreating is not None:
            self._recreating.cancel()
        await self._puller.stop()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def _received(self, msg: Any, puller: Puller) -> None:
        if self._stopping:
            # Arrived while stopping: nak at once so the next leader gets it now, not
            # after ack_wait.
            puller.finished()
            self._spawn(self._settle(NatsDelivery(msg).nak()), counted=False)
            return
        self._budget.held += 1
        self._spawn(self._dispatch(msg), counted=True)

    def _spawn(self, coro: Any, *, counted: bool) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        if counted:
            task.add_done_callback(self._finished)

    def _finished(self, _task: asyncio.Task[None]) -> None:
        self._budget.release()
        self._puller.finished()

    def _gone(self, puller: Puller) -> None:
        """The durable answers "gone" or keeps answering 503: re-create it (idempotent)."""
        if self._stopping or (self._recreating is not None and not self._recreating.done()):
            return
        self._recreating = asyncio.get_running_loop().create_task(self._recreate(puller))

    async def _recreate(self, puller: Puller) -> None:
        try:
            await self._bus.ensure_consumer()
        except Exception as exc:  # no leader yet: the puller keeps backing off and asks again
            _log.info("bus.consumer_recreate_failed", error=repr(exc))
            return
        puller.revived()

    async def _dispatch(self, msg: Any) -> None:
        delivery = NatsDelivery(msg)
        event = admit_event(msg.data, msg.subject)
        if isinstance(event, TaskError):
            # Untrusted bytes: kept in the DLQ, then never delivered again.
            _log.error(
                "bus.event_undecodable",
                subject=msg.subject,
                error=event.message[:500],
                size=len(msg.data),
                num_delivered=delivery.num_delivered,
            )
            if await self._bus.dead_letter(msg, event, delivery.num_delivered):
                await self._settle(delivery.term())
            else:
                await self._settle(delivery.nak(self._bus.error_delay))
            return
        try:
            await self._handler(event, delivery)
        except Exception:
            _log.exception("bus.handler_failed", subject=msg.subject)
            await self._settle(delivery.nak(self._bus.error_delay))

    @staticmethod
    async def _settle(coro: Any) -> None:
        try:
            await coro
        except Exception as exc:  # an ack lost to a disconnect means a later redelivery
            _log.warning("bus.settle_failed", error=repr(exc))


class NatsBus:
    """JetStream EventBus: durable work-queue events, one handler per event cluster-wide.

    Args:
        js: a nats-py JetStream context.
        replicas: replicas used if this bus has to create the stream.
        stream: stream name.
        durable: shared durable consumer name.
        ack_wait: seconds before an unsettled event is redelivered.
        concurrency: most events handled at once per subscription.
        fetch_expiry: seconds each fetch waits for events (bounds ``stop()``).
        error_delay: redelivery delay after a handler raised.
    """

    def __init__(
        self,
        js: Any,
        *,
        replicas: int = 1,
        stream: str = DAG_EVENTS_STREAM,
        durable: str = SCHEDULER_DURABLE,
        ack_wait: float = 30.0,
        concurrency: int = 64,
        fetch_expiry: float = 1.0,
        error_delay: float = 1.0,
    ) -> None:
        self._js = js
        self._replicas = replicas
        self.stream = stream
        self.durable = durable
        self.ack_wait = ack_wait
        self.concurrency = concurrency
        self.fetch_expiry = fetch_expiry
        self.error_delay = error_delay
        self._ready = False
        self._lock = asyncio.Lock()
        self._filter = "DAG.>"
        # nats-py keeps the connection on the JetStream context.
        self._requests = requests_for(js._nc)
        self._expect_stream = {HEADER_EXPECTED_STREAM: stream}

    @classmethod
    async def create(cls, js: Any, *, replicas: int = 1, **options: Any) -> Self:
        """Create-or-open the events stream and return the bus."""
        bus = cls(js, replicas=replicas, **options)
        await bus.ensure_stream()
        return bus

    async def ensure_stream(self) -> None:
        """Create the events stream unless it exists (an existing one is used as it is)."""
        if self._ready:
            return
        async with self._lock:
            if self._ready:
                return
            try:
                await self._js.stream_info(self.stream)
            except nats.js.errors.NotFoundError:
                config = StreamConfig(
                    name=self.stream,
                    subjects=["DAG.>"],
                    retention=RetentionPolicy.WORK_QUEUE,
                    storage=StorageType.FILE,
                    max_age=EVENTS_MAX_AGE,
                    num_replicas=self._replicas,
                    max_consumers=EVENTS_MAX_CONSUMERS,
                )
                try:
                    await self._js.add_stream(config)
                    _log.info("bus.stream_created", stream=self.stream, replicas=self._replicas)
                except nats.js.errors.BadRequestError:
                    # Lost a creation race to another process with another config: use theirs.
                    await self._js.stream_info(self.stream)
            self._ready = True

    async def publish(self, subject: str, data: bytes) -> None:
        """Publish one encoded event on ``DAG.<dag>.<kind>.<step>`` and await the PubAck."""
        await self.ensure_stream()
        try:
            await self._requests.publish(subject, data, self._expect_stream)
        except (TimeoutError, nats.errors.NoRespondersError, NoStreamResponseError) as exc:
            raise PublishFailed(
                f"event on {subject} was not confirmed: {exc!r}", subject=subject
            ) from exc

    async def dead_letter(self, msg: Any, error: TaskError, attempt: int) -> bool:
        """Store a rejected event's raw bytes in the DLQ (deduplicated per stream sequence)."""
        entry = DLQEntry(
            error=error,
            final_attempt=attempt,
            dead_lettered_at=datetime.now(UTC),
            raw=bytes(msg.data),
            subject=msg.subject,
        )
        try:
            seq = int(msg.metadata.sequence.stream)
            await publish_dead_letter(
                self._js,
                dlq_subject(EVENTS_DLQ_NAME),
                entry,
                msg_id=f"{self.stream}:{seq}:dlq",
                timeout=DLQ_PUBLISH_TIMEOUT,
            )
        except Exception as exc:
            _log.error("bus.dlq_publish_failed", subject=msg.subject, error=repr(exc))
            return False
        return True

    def _consumer_config(self, filter_subject: str) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            filter_subject=filter_subject,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=advisory.EVENT_MAX_DELIVER,
            max_ack_pending=max(self.concurrency * 4, 256),
        )

    async def ensure_consumer(self, filter_subject: str | None = None) -> None:
        """Create the shared durable (or find the identical one) on the events stream."""
        self._filter = filter_subject or self._filter
        await self._js.add_consumer(self.stream, self._consumer_config(self._filter))

    async def subscribe(self, filter_subject: str, handler: EventHandler) -> NatsSubscription:
        """Bind the shared durable and deliver matching events to ``handler``."""
        await self.ensure_stream()
        await self.ensure_consumer(filter_subject)
        sub = NatsSubscription(self, self._js._nc, handler, self.concurrency)
        await sub.start()
        return sub

    async def tap(self, filter_subject: str = "DAG.>") -> AsyncIterator[Event]:
        """Yield events live as they are published (core subscription; takes nothing)."""
        nc = self._js._nc  # nats-py keeps the connection on the JetStream context
        sub = await nc.subscribe(filter_subject)
        try:
            async for msg in sub.messages:
                event = admit_event(msg.data, msg.subject)
                if isinstance(event, TaskError):
                    _log.warning("bus.tap_undecodable", subject=msg.subject, error=event.message)
                    continue
                yield event
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
