"""One EventBus contract, run against MemBus and NatsBus (real nats-server)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats
import pytest
import structlog

from ebind.embed import Node
from ebind.streams import DAG_EVENTS_STREAM
from ebind.workflow.bus_mem import MemBus, subject_matches
from ebind.workflow.bus_nats import NatsBus
from ebind.workflow.protocols import Delivery, EventBus
from ebind.workflow.types import Event, EventKind

ACK_WAIT = 0.7


@pytest.fixture(scope="module")
def server_url(nats_node_module: Node) -> Iterator[str]:
    yield nats_node_module.client_url


@dataclass
class Rig:
    bus: EventBus
    js: Any = None
    closers: list[Any] = field(default_factory=list)


@pytest.fixture(params=["mem", "nats"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    if request.param == "mem":
        bus = MemBus(ack_wait=ACK_WAIT, error_delay=0.2)
        r = Rig(bus)
        yield r
        for c in r.closers:
            await c.stop()
        await bus.close()
        return
    nc = await nats.connect(request.getfixturevalue("server_url"))
    js = nc.jetstream()
    # A work-queue stream allows one consumer per filter overlap: start each test clean.
    with contextlib.suppress(Exception):
        await js.delete_stream(DAG_EVENTS_STREAM)
    # Rejected events are dead-lettered there before they are terminated.
    with contextlib.suppress(Exception):
        await js.add_stream(name="EBIND_DLQ", subjects=["DLQ.>"])
    nbus = await NatsBus.create(js, ack_wait=ACK_WAIT, fetch_expiry=0.2, error_delay=0.2)
    r = Rig(nbus, js)
    try:
        yield r
        for c in r.closers:
            await c.stop()
    finally:
        await nc.close()


def ev(dag: str, step: str, kind: EventKind = EventKind.COMPLETED) -> tuple[str, bytes]:
    e = Event(kind=kind, dag_id=dag, step_id=step)
    return f"DAG.{dag}.{kind.value}.{step}", msgspec.json.encode(e)


class Recorder:
    """A handler that records deliveries and settles them by a rule."""

    def __init__(
        self, rule: str = "ack", nak_delay: float = 0.0, changed: asyncio.Event | None = None
    ) -> None:
        self.rule = rule
        self.nak_delay = nak_delay
        self.seen: list[tuple[float, Event, int]] = []
        self.changed = changed or asyncio.Event()

    async def __call__(self, event: Event, delivery: Delivery) -> None:
        n = int(getattr(delivery, "num_delivered", 0))
        self.seen.append((time.monotonic(), event, n))
        self.changed.set()
        if self.rule == "ack":
            await delivery.ack()
        elif self.rule == "nak_once":
            await (delivery.nak(self.nak_delay) if n == 1 else delivery.ack())
        elif self.rule == "term":
            await delivery.term()
        elif self.rule == "raise_once" and n == 1:
            raise RuntimeError("handler bug")
        elif self.rule == "raise_once":
            await delivery.ack()
        # rule "ignore": never settle

    async def wait(self, count: int, within: float = 5.0, *others: Recorder) -> None:
        async with asyncio.timeout(within):
            while len(self.seen) + sum(len(o.seen) for o in others) < count:
                self.changed.clear()
                await self.changed.wait()


async def sub(r: Rig, filt: str, handler: Recorder) -> Any:
    s = await r.bus.subscribe(filt, handler)
    r.closers.append(s)
    return s


async def test_each_event_reaches_one_member_of_the_group(rig: Rig) -> None:
    shared = asyncio.Event()
    h1, h2 = Recorder(changed=shared), Recorder(changed=shared)
    await sub(rig, "DAG.>", h1)
    await sub(rig, "DAG.>", h2)
    for i in range(30):
        await rig.bus.publish(*ev("d1", f"s{i}"))
    await h1.wait(30, 5.0, h2)
    await asyncio.sleep(0.3)
    counts = Counter(e.step_id for _, e, _ in h1.seen + h2.seen)
    assert len(counts) == 30 and set(counts.values()) == {1}


async def test_events_published_before_subscribe_are_kept(rig: Rig) -> None:
    for i in range(3):
        await rig.bus.publish(*ev("d2", f"s{i}"))
    h = Recorder()
    await sub(rig, "DAG.>", h)
    await h.wait(3)
    assert sorted(e.step_id for _, e, _ in h.seen) == ["s0", "s1", "s2"]


async def test_ack_is_final(rig: Rig) -> None:
    h = Recorder("ack")
    await sub(rig, "DAG.>", h)
    await rig.bus.publish(*ev("d3", "a"))
    await h.wait(1)
    await asyncio.sleep(ACK_WAIT + 0.3)
    assert len(h.seen) == 1


async def test_nak_with_delay_redelivers_after_the_delay(rig: Rig) -> None:
    h = Recorder("nak_once", nak_delay=0.25)
    await sub(rig, "DAG.>", h)
    await rig.bus.publish(*ev("d4", "a"))
    await h.wait(2)
    (t1, e1, n1), (t2, e2, n2) = h.seen
    assert e1 == e2 and (n1, n2) == (1, 2)
    assert 0.2 <= t2 - t1 < ACK_WAIT


async def test_term_is_never_redelivered(rig: Rig) -> None:
    h = Recorder("term")
    await sub(rig, "DAG.>", h)
    await rig.bus.publish(*ev("d5", "a"))
    await h.wait(1)
    await asyncio.sleep(ACK_WAIT + 0.3)
    assert len(h.seen) == 1


async def test_unsettled_event_comes_back_after_ack_wait(rig: Rig) -> None:
    h = Recorder("ignore")
    await sub(rig, "DAG.>", h)
    await rig.bus.publish(*ev("d6", "a"))
    await h.wait(2, ACK_WAIT * 3)
    (t1, _, _), (t2, _, n2) = h.seen[:2]
    assert n2 == 2 and t2 - t1 >= ACK_WAIT * 0.9


async def test_handler_error_redelivers(rig: Rig) -> None:
    h = Recorder("raise_once")
    await sub(rig, "DAG.>", h)
    await rig.bus.publish(*ev("d7", "a"))
    await h.wait(2)
    assert [n for _, _, n in h.seen] == [1, 2]


async def test_undecodable_event_is_terminated_and_logged_once(rig: Rig) -> None:
    h = Recorder()
    with structlog.testing.capture_logs() as logs:
        await sub(rig, "DAG.>", h)
        await rig.bus.publish("DAG.d8.completed.a", b"\x00garbage")
        await rig.bus.publish(*ev("d8", "b"))
        await h.wait(1)
        await asyncio.sleep(ACK_WAIT + 0.3)
    assert [e.step_id for _, e, _ in h.seen] == ["b"]
    bad = [entry for entry in logs if entry["event"] == "bus.event_undecodable"]
    assert len(bad) == 1 and bad[0]["subject"] == "DAG.d8.completed.a"


@pytest.mark.parametrize(
    ("filt", "expected"),
    [
        ("DAG.w1.>", {"DAG.w1.completed.a", "DAG.w1.signal.b"}),
        ("DAG.*.completed.a", {"DAG.w1.completed.a", "DAG.w2.completed.a"}),
        ("DAG.w2.*.*", {"DAG.w2.completed.a"}),
    ],
)
async def test_wildcard_filters(rig: Rig, filt: str, expected: set[str]) -> None:
    h = Recorder()
    await sub(rig, filt, h)
    subjects = ["DAG.w1.completed.a", "DAG.w1.signal.b", "DAG.w2.completed.a", "DAG.w3.resumed.w3"]
    for s in subjects:
        dag, kind, step = s.split(".")[1:]
        await rig.bus.publish(
            s, msgspec.json.encode(Event(kind=EventKind(kind), dag_id=dag, step_id=step))
        )
    await h.wait(len(expected))
    await asyncio.sleep(0.3)
    got = {f"DAG.{e.dag_id}.{e.kind.value}.{e.step_id}" for _, e, _ in h.seen}
    assert got == expected


async def test_stop_hands_events_to_the_next_subscriber(rig: Rig) -> None:
    h1 = Recorder()
    s1 = await rig.bus.subscribe("DAG.>", h1)
    await rig.bus.publish(*ev("d9", "a"))
    await h1.wait(1)
    await s1.stop()
    await s1.stop()  # idempotent
    await rig.bus.publish(*ev("d9", "b"))
    await asyncio.sleep(0.3)
    assert len(h1.seen) == 1
    h2 = Recorder()
    await sub(rig, "DAG.>", h2)
    await h2.wait(1)
    assert [e.step_id for _, e, _ in h2.seen] == ["b"]


@pytest.mark.parametrize("rig", ["nats"], indirect=True)  # tap is a NatsBus-only helper
async def test_nats_tap_sees_events_without_taking_them(rig: Rig) -> None:
    assert isinstance(rig.bus, NatsBus)
    seen: list[Event] = []

    async def watch() -> None:
        async for e in rig.bus.tap("DAG.t1.>"):  # type: ignore[attr-defined]
            seen.append(e)
            if len(seen) == 2:
                return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.1)
    await rig.bus.publish(*ev("t1", "a"))
    await rig.bus.publish(*ev("t1", "b"))
    async with asyncio.timeout(5):
        await watcher
    h = Recorder()
    await sub(rig, "DAG.>", h)
    await h.wait(2)
    assert sorted(e.step_id for e in seen) == ["a", "b"]


@pytest.mark.parametrize(
    ("filt", "subject", "ok"),
    [
        ("DAG.>", "DAG.a.b.c", True),
        ("DAG.>", "DAG", False),
        ("DAG.*.x", "DAG.a.x", True),
        ("DAG.*.x", "DAG.a.b.x", False),
        ("DAG.a", "DAG.a.b", False),
        ("DAG.a.>", "DAG.a", False),
    ],
)
def test_subject_matches(filt: str, subject: str, ok: bool) -> None:
    assert subject_matches(filt, subject) is ok


@pytest.mark.parametrize("rig", ["nats"], indirect=True)
async def test_nats_subscription_recreates_a_deleted_durable(rig: Rig) -> None:
    assert isinstance(rig.bus, NatsBus)
    h = Recorder()
    await sub(rig, "DAG.>", h)
    await rig.bus.publish(*ev("g1", "a"))
    await h.wait(1)
    await asyncio.sleep(0.2)  # let the ack land: an unacked event is delivered again
    await rig.js.delete_consumer(DAG_EVENTS_STREAM, rig.bus.durable)
    await rig.bus.publish(*ev("g1", "b"))
    await h.wait(2, 10.0)  # the puller sees the consumer gone and the bus re-creates it
    assert [e.step_id for _, e, _ in h.seen] == ["a", "b"]
    info = await rig.js.consumer_info(DAG_EVENTS_STREAM, rig.bus.durable)
    assert info.config.filter_subject == "DAG.>"


@pytest.mark.parametrize("rig", ["nats"], indirect=True)
async def test_nats_stop_hands_back_unhandled_events_and_waits_for_running_ones(
    rig: Rig,
) -> None:
    release, started = asyncio.Event(), asyncio.Event()

    async def slow(event: Event, delivery: Delivery) -> None:
        started.set()
        await release.wait()
        await delivery.ack()

    s = await rig.bus.subscribe("DAG.>", slow)
    await rig.bus.publish(*ev("g2", "a"))
    await asyncio.wait_for(started.wait(), 5)
    stopping = asyncio.create_task(s.stop())
    await asyncio.sleep(0.1)
    assert not stopping.done()  # waits for the running handler
    release.set()
    await asyncio.wait_for(stopping, 5)
    # Nothing is left unacknowledged: a new subscriber gets only the new event, at once.
    h = Recorder()
    await sub(rig, "DAG.>", h)
    await rig.bus.publish(*ev("g2", "b"))
    await h.wait(1)
    await asyncio.sleep(0.2)
    assert [e.step_id for _, e, _ in h.seen] == ["b"]


@pytest.mark.parametrize("rig", ["nats"], indirect=True)
async def test_nats_subscription_ends_quietly_when_the_connection_closes(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    h = Recorder()
    s = await rig.bus.subscribe("DAG.>", h)
    await rig.js._nc.close()
    await asyncio.sleep(1.5)  # several pull expiries: no warning per retry
    await asyncio.wait_for(s.stop(), 5)
    err = capsys.readouterr().err
    assert "pull_request_failed" not in err and "pull_loop_error" not in err
