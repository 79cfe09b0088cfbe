"""MemBus: an in-memory EventBus that behaves like a shared durable on a work-queue stream.

Each distinct filter is one consumer group (like the durable ``ebind-scheduler``): every
subscription with that filter joins the group, and each matching event reaches exactly
one member. Events wait in the group while it has no members, events matching no group
wait until a group subscribes (a work queue keeps them), ``nak(delay)`` redelivers after
the delay, an unsettled delivery is redelivered after ``ack_wait``, ``term`` drops the
event, and an undecodable body is terminated and logged. Subjects match with ``*`` and a
trailing ``>``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from ebind.logging import get_logger
from ebind.workflow.protocols import EventHandler
from ebind.workflow.types import Event

__all__ = ["MemBus", "MemDelivery", "MemSubscription", "subject_matches"]

_log = get_logger("ebind.workflow.bus")
_event_dec = msgspec.json.Decoder(Event)


def subject_matches(filter_subject: str, subject: str) -> bool:
    """Whether ``subject`` matches the NATS filter (``*`` = one token, trailing ``>`` = rest)."""
    ftoks = filter_subject.split(".")
    stoks = subject.split(".")
    for i, ft in enumerate(ftoks):
        if ft == ">" and i == len(ftoks) - 1:
            return len(stoks) > i
        if i >= len(stoks):
            return False
        if ft != "*" and ft != stoks[i]:
            return False
    return len(stoks) == len(ftoks)


@dataclass
class _Msg:
    """One stored event and how often it was delivered."""

    seq: int
    subject: str
    data: bytes
    num_delivered: int = 0


class MemDelivery:
    """Acknowledgement handle of one delivery; only the first ack/nak/term counts."""

    def __init__(self, group: _Group, msg: _Msg) -> None:
        self._group = group
        self._msg = msg
        self.subject = msg.subject
        self.num_delivered = msg.num_delivered
        self.settled = False
        self.timer: asyncio.TimerHandle | None = None

    def settle(self) -> bool:
        """Mark settled; False if it already was (later acks are ignored)."""
        if self.settled:
            return False
        self.settled = True
        if self.timer is not None:
            self.timer.cancel()
            self._group.bus._timers.discard(self.timer)
        return True

    async def ack(self) -> None:
        """The event was handled."""
        if self.settle():
            self._group.bus._finish(self._msg)

    async def nak(self, delay: float | None = None) -> None:
        """Redeliver the event after ``delay`` seconds (at once when None)."""
        if self.settle():
            self._group.redeliver_later(self._msg, delay or 0.0)

    async def term(self) -> None:
        """Never redeliver (poison event)."""
        if self.settle():
            self._group.bus._finish(self._msg)


class MemSubscription:
    """One member of a consumer group."""

    def __init__(self, group: _Group, handler: EventHandler) -> None:
        self._group = group
        self.handler = handler
        self.active = True
        self.running: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        """Stop receiving events; handlers already running are awaited."""
        if not self.active:
            return
        self.active = False
        self._group.members.remove(self)
        if self.running:
            await asyncio.gather(*self.running, return_exceptions=True)


@dataclass(eq=False)
class _Group:
    """A consumer group: one filter, its members and the events waiting for a member."""

    bus: MemBus
    filter: str
    members: list[MemSubscription] = field(default_factory=list)
    waiting: deque[_Msg] = field(default_factory=deque)
    rr: itertools.count[int] = field(default_factory=itertools.count)

    def offer(self, msg: _Msg) -> None:
        """Deliver to one member, or keep the event until a member joins."""
        if not self.members or self.bus.closed:
            self.waiting.append(msg)
            return
        member = self.members[next(self.rr) % len(self.members)]
        msg.num_delivered += 1
        task = asyncio.get_running_loop().create_task(self.bus._dispatch(self, member, msg))
        member.running.add(task)
        task.add_done_callback(member.running.discard)

    def flush(self) -> None:
        """Hand every waiting event to the members."""
        while self.waiting and self.members:
            self.offer(self.waiting.popleft())

    def redeliver_later(self, msg: _Msg, delay: float) -> None:
        """Offer ``msg`` again after ``delay`` seconds."""
        self.bus._later(delay, lambda: self.offer(msg))


class MemBus:
    """In-memory EventBus with shared-durable semantics and real ack/nak/term.

    Args:
        ack_wait: seconds after which a delivery nobody acked, nak'd or term'd is
            redelivered (the durable's AckWait).
        error_delay: redelivery delay after a handler raised.
    """

    def __init__(self, *, ack_wait: float = 30.0, error_delay: float = 1.0) -> None:
        self._ack_wait = ack_wait
        self._error_delay = error_delay
        self._groups: dict[str, _Group] = {}
        self._unrouted: list[_Msg] = []
        self._seq = itertools.count(1)
        self._outstanding: set[int] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.closed = False
        self.published: list[tuple[str, bytes]] = []
        """Every (subject, data) ever published, in order (for assertions)."""

    async def publish(self, subject: str, data: bytes) -> None:
        """Publish one encoded event on ``DAG.<dag>.<kind>.<step>``."""
        if "*" in subject.split(".") or ">" in subject.split("."):
            raise ValueError(f"cannot publish to a wildcard subject {subject!r}")
        await asyncio.sleep(0)
        data = bytes(data)
        self.published.append((subject, data))
        groups = [g for g in self._groups.values() if subject_matches(g.filter, subject)]
        if not groups:
            msg = _Msg(next(self._seq), subject, data)
            self._track(msg)
            self._unrouted.append(msg)
            return
        for group in groups:
            msg = _Msg(next(self._seq), subject, data)
            self._track(msg)
            group.offer(msg)

    async def subscribe(self, filter_subject: str, handler: EventHandler) -> MemSubscription:
        """Join the consumer group of ``filter_subject``; ``handler`` must ack, nak or term."""
        group = self._groups.get(filter_subject)
        if group is None:
            group = self._groups[filter_subject] = _Group(self, filter_subject)
            # A new durable on a work queue picks up what no consumer took yet.
            keep: list[_Msg] = []
            for msg in self._unrouted:
                (group.waiting if subject_matches(filter_subject, msg.subject) else keep).append(
                    msg
                )
            self._unrouted = keep
        sub = MemSubscription(group, handler)
        group.members.append(sub)
        group.flush()
        return sub

    @property
    def pending(self) -> int:
        """Events published but not yet acked or terminated (per group)."""
        return len(self._outstanding)

    async def join(self) -> None:
        """Wait until every published event was acked or terminated (bound it yourself)."""
        await self._idle.wait()

    async def close(self) -> None:
        """Cancel running handlers and redelivery timers; nothing is delivered afterwards."""
        self.closed = True
        tasks = [t for g in self._groups.values() for m in g.members for t in m.running]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    # -- internals ---------------------------------------------------------------------

    def _track(self, msg: _Msg) -> None:
        self._outstanding.add(msg.seq)
        self._idle.clear()

    def _finish(self, msg: _Msg) -> None:
        self._outstanding.discard(msg.seq)
        if not self._outstanding:
            self._idle.set()

    def _later(self, delay: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(timer)
            fn()

        timer = loop.call_later(max(delay, 0.0), fire)
        self._timers.add(timer)
        return timer

    async def _dispatch(self, group: _Group, member: MemSubscription, msg: _Msg) -> None:
        delivery = MemDelivery(group, msg)

        def ack_wait_expired() -> None:
            # Nobody settled it in time: like a real durable, hand it out again.
            if delivery.settle():
                group.offer(msg)

        delivery.timer = self._later(self._ack_wait, ack_wait_expired)
        try:
            event = _event_dec.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            _log.error(
                "bus.event_undecodable", subject=msg.subject, error=str(exc), size=len(msg.data)
            )
            await delivery.term()
            return
        try:
            await member.handler(event, delivery)
        except asyncio.CancelledError:
            if delivery.settle():
                group.redeliver_later(msg, 0.0)
            raise
        except Exception:
            _log.exception("bus.handler_failed", subject=msg.subject)
            await delivery.nak(self._error_delay)
