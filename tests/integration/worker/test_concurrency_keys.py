"""Concurrency keys on real workers: visible waits, round-robin, cancel-in-progress, bad records."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import structlog
from worker_helpers import dlq_entries, running, wait_for

from ebind import observe
from ebind.app import App
from ebind.context import Context
from ebind.embed import Node
from ebind.errors import TaskFailed
from ebind.limits.concurrency_rules import (
    CancelNotice,
    Concurrency,
    cancel_key,
    key_group,
    slot_key,
)
from ebind.streams import KV_LEASES
from ebind.worker import advisory

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def app(nats_node_module: Node) -> AsyncIterator[App]:
    """A connected App on the module's node (each test registers its own task names)."""
    a = App("ctest", nats_url=nats_node_module.client_url)
    await a.connect()
    try:
        yield a
    finally:
        await a.close()


async def test_a_waiting_task_is_visible_and_runs_once_the_slot_frees(app: App) -> None:
    gate = asyncio.Event()
    ran: list[str] = []

    @app.task(name="ck.visible", concurrency=1, concurrency_key="account")
    async def work(account: str, n: int) -> int:
        ran.append(f"{account}{n}")
        if n == 1:
            await gate.wait()
        return n

    async with running(app, concurrency=8):
        first = await work.delay("acme", 1)
        await wait_for(lambda: ran == ["acme1"], 10)
        second = await work.delay("acme", 2)
        # another key, and a call whose key is given explicitly, are not held back
        other = await work.delay("globex", 3)
        assert await other.result(10) == 3
        given = await work.apply_async(("acme", 4), concurrency_key="acme-batch")
        assert await given.result(10) == 4

        async def waiting_note() -> bool:
            got = await second.progress()
            return got is not None and "waiting for a concurrency slot" in got.note

        await wait_for(waiting_note, 10)
        assert "acme2" not in ran
        gate.set()
        assert await first.result(10) == 1
        assert await second.result(15) == 2
    assert await dlq_entries(app, "ck.visible") == []


async def test_round_robin_lets_other_keys_run_between_a_backlog(app: App) -> None:
    done: list[str] = []

    @app.task(
        name="ck.rr",
        concurrency=Concurrency(limit=1, key="key", strategy="round_robin", lease_ttl=5.0),
    )
    async def work(key: str, n: int) -> str:
        await asyncio.sleep(0.4)
        done.append(f"{key}{n}")
        return key

    # A backlog of key "a" ahead of two tasks of key "b", on a worker that runs two at once.
    futs = [await work.delay("a", n) for n in range(5)]
    futs += [await work.delay("b", n) for n in range(2)]
    async with running(app, concurrency=2):
        await asyncio.gather(*(f.result(40) for f in futs))
    a_done = [i for i, name in enumerate(done) if name.startswith("a")]
    b_done = [i for i, name in enumerate(done) if name.startswith("b")]
    # "b" did not wait for the backlog: its first task finished before the second "a"
    assert b_done[0] < a_done[1], done
    assert b_done[-1] < a_done[-1], done
    assert await dlq_entries(app, "ck.rr") == []


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_cancel_in_progress_stops_the_oldest_run_and_tells_its_waiter(
    app: App, kind: str
) -> None:
    started = threading.Event()
    stopped: list[str] = []
    strategy = Concurrency(limit=1, key="doc", strategy="cancel_in_progress")
    name = f"ck.cancel.{kind}"

    if kind == "async":

        @app.task(name=name, concurrency=strategy)
        async def render(doc: str, version: int) -> int:
            if version == 1:
                started.set()
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    stopped.append("cancelled")
                    raise
            return version

    else:

        @app.task(name=name, concurrency=strategy)
        def render(ctx: Context, doc: str, version: int) -> int:  # type: ignore[misc]
            if version == 1:
                started.set()
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    if ctx.revoked:
                        stopped.append("flagged")
                    ctx.check_revoked()
                    time.sleep(0.02)
            return version

    async with running(app, concurrency=4):
        old = await render.delay("d1", 1)
        await asyncio.to_thread(started.wait, 10)
        new = await render.delay("d1", 2)
        with pytest.raises(TaskFailed) as info:
            await old.result(15)
        assert info.value.error.kind == "superseded"
        assert new.id in info.value.error.message and "'d1'" in info.value.error.message
        assert await new.result(15) == 2
    assert stopped[:1] == ["cancelled" if kind == "async" else "flagged"]
    (entry,) = await dlq_entries(app, name)
    assert entry.error.kind == "superseded" and not entry.error.retryable


@pytest.mark.parametrize(
    "record",
    [
        b"\xff not json",
        b'{"task_id":"x","task_name":"ck.bad","key":"k","worker_id":"w",'
        b'"started_at":0,"expires_at":1e18}',
        b'{"task_id":"x","task_name":"other","key":"k","worker_id":"w",'
        b'"started_at":0,"expires_at":0}',
    ],
    ids=["garbage", "far-future", "another-task"],
)
async def test_a_bad_slot_record_does_not_wedge_its_key(app: App, record: bytes) -> None:
    @app.task(name="ck.bad", concurrency=1, concurrency_key="key")
    async def work(key: str) -> str:
        return key

    kv = await app.js.key_value(KV_LEASES)
    await kv.put(slot_key(key_group("ck.bad", "k"), 0), record)  # no TTL: it would stay
    with structlog.testing.capture_logs() as logs:
        async with running(app):
            assert await (await work.delay("k")).result(10) == "k"
    assert any(e["event"] == "concurrency.bad_slot_record" for e in logs)


async def test_a_key_that_cannot_be_computed_fails_the_call_not_the_worker(app: App) -> None:
    from ebind.errors import InvalidArguments

    @app.task(name="ck.keyfn", concurrency=1, concurrency_key=lambda user, **_: user["id"])
    async def work(user: dict[str, Any]) -> int:
        return 1

    with pytest.raises(InvalidArguments, match="concurrency key function raised KeyError"):
        await work.delay({"name": "no id"})
    with pytest.raises(InvalidArguments, match="1 to 256 characters"):
        await work.delay({"id": "x" * 300})
    with pytest.raises(InvalidArguments, match="1 to 256 characters"):
        await work.apply_async(({"id": "k"},), concurrency_key="")

    @app.task(name="ck.unlimited")
    async def unlimited() -> int:
        return 1

    with pytest.raises(InvalidArguments, match="has no concurrency limit"):
        await unlimited.apply_async(concurrency_key="k")


async def test_a_run_longer_than_the_lease_ttl_keeps_its_slot(app: App) -> None:
    spans: list[tuple[float, float]] = []

    @app.task(name="ck.renew", concurrency=Concurrency(limit=1, lease_ttl=1.0))
    async def work(seconds: float) -> None:
        began = time.monotonic()
        await asyncio.sleep(seconds)
        spans.append((began, time.monotonic()))

    async with running(app, concurrency=8):
        long = await work.delay(1.6)  # renewed four times in its run
        await asyncio.sleep(0.3)
        short = await work.delay(0.0)
        await long.result(15)
        await short.result(15)
    (first, second) = spans
    assert second[0] >= first[1], "the second run started while the first held the only slot"


async def test_bad_cancel_notices_leave_the_run_alone(app: App) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    @app.task(name="ck.notices", concurrency=Concurrency(limit=1, key="doc"))
    async def work(doc: str) -> str:
        started.set()
        await release.wait()
        return doc

    kv = await app.js.key_value(KV_LEASES)
    async with running(app):
        fut = await work.delay("d1")
        await asyncio.wait_for(started.wait(), 10)
        key = cancel_key(fut.id)
        await kv.put(key, b"\xff junk")
        # well formed, but for another task, or another key of this one
        await kv.put(key, msgspec.json.encode(CancelNotice(task_id="other", by="x", key="d1")))
        await kv.put(key, msgspec.json.encode(CancelNotice(task_id=fut.id, by="x", key="d2")))
        await kv.delete(key)
        await app.nc.flush()
        await asyncio.sleep(0.2)
        release.set()
        assert await fut.result(10) == "d1"
    assert await dlq_entries(app, "ck.notices") == []


async def test_waiters_held_on_one_worker_run_in_arrival_order(app: App) -> None:
    gate = asyncio.Event()
    order: list[int] = []

    @app.task(name="ck.fifo", concurrency=Concurrency(limit=1, key="key", hold=20.0))
    async def work(key: str, n: int) -> int:
        order.append(n)
        if n == 0:
            await gate.wait()
        return n

    async with running(app, concurrency=16):
        first = await work.delay("k", 0)
        await wait_for(lambda: order == [0], 10)
        rest = [await work.delay("k", n) for n in (1, 2, 3)]

        async def all_waiting() -> bool:
            notes = [await f.progress() for f in rest]
            return all(p is not None and p.note.startswith("waiting") for p in notes)

        await wait_for(all_waiting, 10)
        gate.set()
        assert [await f.result(10) for f in (first, *rest)] == [0, 1, 2, 3]
    assert order == [0, 1, 2, 3]


async def test_a_task_revoked_while_it_waits_never_runs(app: App) -> None:
    gate = asyncio.Event()
    ran: list[int] = []

    @app.task(name="ck.revoked", concurrency=Concurrency(limit=1, hold=20.0))
    async def work(n: int) -> int:
        ran.append(n)
        if n == 0:
            await gate.wait()
        return n

    async with running(app, concurrency=8):
        first = await work.delay(0)
        await wait_for(lambda: ran == [0], 10)
        second = await work.delay(1)

        async def waiting() -> bool:
            got = await second.progress()
            return got is not None and got.note.startswith("waiting")

        await wait_for(waiting, 10)
        await second.revoke()
        gate.set()
        assert await first.result(10) == 0
        with pytest.raises(TaskFailed) as info:
            await second.result(10)
        assert info.value.error.kind == "revoked"
    assert ran == [0]


async def test_a_wait_longer_than_the_delivery_limit_is_not_dead_lettered(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(advisory, "TASK_MAX_DELIVER", 2)
    gate = asyncio.Event()
    deferred: list[str] = []
    stop = observe.subscribe(
        lambda event, fields: (
            deferred.append(fields["task"]) if event == observe.CONCURRENCY_DEFERRED else None
        )
    )

    # hold=0: every wait is a re-publish, which a nak-based wait would count as a delivery
    @app.task(name="ck.long_wait", concurrency=Concurrency(limit=1, hold=0.0))
    async def work(n: int) -> int:
        if n == 0:
            await gate.wait()
        return n

    try:
        async with running(app, concurrency=4):
            first = await work.delay(0)
            second = await work.delay(1)
            await wait_for(lambda: len(deferred) >= 3, 15)
            gate.set()
            assert await first.result(10) == 0
            assert await second.result(15) == 1
    finally:
        stop()
    assert await dlq_entries(app, "ck.long_wait") == []
