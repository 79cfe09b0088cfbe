"""KVLeaseElector on a real nats-server: one leader, takeover, TTL expiry, stale leader."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import nats.js.errors
import pytest
import structlog

from ebind.embed import Node
from ebind.workflow.leader import AlwaysLeader, KVLeaseElector

TTL = 2.0


@pytest.fixture
async def js(nats_node_module: Node) -> AsyncIterator[object]:
    nc = await nats.connect(nats_node_module.client_url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


def key() -> str:
    return "sched-" + uuid.uuid4().hex[:8]


async def poll(check: Callable[[], bool | Awaitable[bool]], within: float, step: float) -> float:
    """Seconds until ``check()`` is true, checking every ``step``; fails after ``within``."""
    t0 = time.monotonic()
    for _ in range(int(within / step) + 1):
        ok = check()
        if ok if isinstance(ok, bool) else await ok:
            return time.monotonic() - t0
        await asyncio.sleep(step)
    raise AssertionError(f"condition not met within {within}s")


async def wait_until(pred: Callable[[], bool], within: float) -> float:
    return await poll(pred, within, 0.02)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_two_electors_exactly_one_leader(js: object) -> None:
    k = key()
    changes: list[bool] = []
    a = KVLeaseElector(js, key=k, ttl=TTL, holder_id="A", on_change=changes.append)
    b = KVLeaseElector(js, key=k, ttl=TTL, holder_id="B")
    tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
    try:
        await wait_until(lambda: a.is_leader() or b.is_leader(), 5)
        for _ in range(40):  # two renew cycles and a bit
            assert a.is_leader() != b.is_leader()
            await asyncio.sleep(0.05)
        leader = a if a.is_leader() else b
        assert leader.acquired.is_set()
        kv = await js.key_value("ebind-leases")  # type: ignore[attr-defined]
        assert (await kv.get(k)).value == leader.holder_id.encode()
        assert changes == ([True] if leader is a else [])
    finally:
        for t in tasks:
            await stop(t)


async def test_killed_leader_is_replaced_within_ttl_plus_renew(
    js: object, nats_node_module: Node
) -> None:
    k = key()
    # The leader gets its own connection, so it can die without releasing anything.
    nc_a = await nats.connect(nats_node_module.client_url)
    a = KVLeaseElector(nc_a.jetstream(), key=k, ttl=TTL, holder_id="A")
    b = KVLeaseElector(js, key=k, ttl=TTL, holder_id="B")
    assert await a.tick()
    ta = asyncio.create_task(a.run())
    await asyncio.sleep(0.1)
    tb = asyncio.create_task(b.run())
    try:
        await asyncio.sleep(0.3)
        assert a.is_leader() and not b.is_leader()
        await nc_a.close()  # a crash: the connection is gone, no release reaches the server
        await stop(ta)
        assert not a.is_leader()
        took = await wait_until(b.is_leader, TTL + b.renew_interval + 1.5)
        assert TTL * 0.5 <= took <= TTL + b.renew_interval + 1.0
    finally:
        await stop(tb)


async def test_lease_key_expires_after_ttl_and_renewal_keeps_it(js: object) -> None:
    k = key()
    a = KVLeaseElector(js, key=k, ttl=TTL, holder_id="A")
    assert await a.tick()
    kv = await js.key_value("ebind-leases")  # type: ignore[attr-defined]
    # Renewals carry a fresh TTL: after more than one TTL of renewing, the key is alive.
    t_end = time.monotonic() + TTL * 1.5
    while time.monotonic() < t_end:
        await asyncio.sleep(a.renew_interval)
        assert await a.tick()
    assert (await kv.get(k)).value == b"A"
    last = time.monotonic()

    async def absent() -> bool:
        try:
            await kv.get(k)
        except nats.js.errors.KeyNotFoundError:
            return True
        return False

    await poll(absent, TTL + 3, 0.05)
    elapsed = time.monotonic() - last
    assert TTL * 0.8 <= elapsed <= TTL + 2.0
    assert not a.is_leader()  # the local clock ran out too


async def test_stale_leader_steps_down_on_next_renew(js: object) -> None:
    k = key()
    a = KVLeaseElector(js, key=k, ttl=TTL, holder_id="A")
    b = KVLeaseElector(js, key=k, ttl=TTL, holder_id="B")
    assert await a.tick()
    assert not await b.tick()
    # a "pauses" past its TTL: its own clock already says it is not the leader.
    await asyncio.sleep(TTL + 0.3)
    assert not a.is_leader()
    await poll(b.tick, TTL + 3, 0.2)
    with structlog.testing.capture_logs() as logs:
        assert not await a.tick()  # a resumes: the renew finds b's lease
    assert not a.is_leader() and b.is_leader()
    kv = await js.key_value("ebind-leases")  # type: ignore[attr-defined]
    assert (await kv.get(k)).value == b"B"
    assert await b.tick()
    assert not [e for e in logs if e["event"] == "leader.acquired"]


async def test_renew_against_a_changed_lease_ends_leadership_at_once(js: object) -> None:
    k = key()
    a = KVLeaseElector(js, key=k, ttl=TTL, holder_id="A")
    assert await a.tick()
    kv = await js.key_value("ebind-leases")  # type: ignore[attr-defined]
    await kv.put(k, b"intruder")  # e.g. an operator or a split-brain successor
    assert a.is_leader()  # still within its TTL by the local clock
    with structlog.testing.capture_logs() as logs:
        assert not await a.tick()
    assert not a.is_leader()
    assert [e["event"] for e in logs if e["event"].startswith("leader.")] == ["leader.lost"]


async def test_clean_stop_releases_and_follower_takes_over_quickly(js: object) -> None:
    k = key()
    a = KVLeaseElector(js, key=k, ttl=TTL, holder_id="A")
    b = KVLeaseElector(js, key=k, ttl=TTL, holder_id="B")
    ta = asyncio.create_task(a.run())
    await wait_until(a.is_leader, 5)
    tb = asyncio.create_task(b.run())
    try:
        await asyncio.sleep(0.2)
        with structlog.testing.capture_logs() as logs:
            await a.stop()
            await asyncio.wait_for(ta, 5)
        assert not a.is_leader()
        # A clean hand-back is not a lost lease: info, not a warning.
        mine = [e for e in logs if e["event"].startswith("leader.") and e.get("holder") == "A"]
        assert [(e["event"], e["log_level"]) for e in mine] == [("leader.released", "info")]
        took = await wait_until(b.is_leader, TTL)
        assert took < b.renew_interval  # woken by the release, not by the TTL
        b.acquired.clear()
        # a comes back: it must not steal the lease.
        assert not await a.tick()
        assert b.is_leader()
    finally:
        await stop(tb)


async def test_cancelled_run_releases_the_lease(js: object) -> None:
    k = key()
    a = KVLeaseElector(js, key=k, ttl=TTL, holder_id="A")
    ta = asyncio.create_task(a.run())
    await wait_until(a.is_leader, 5)
    await stop(ta)
    assert not a.is_leader()
    b = KVLeaseElector(js, key=k, ttl=TTL, holder_id="B")
    assert await b.tick()  # no TTL wait: the key was released


async def test_same_holder_readopts_its_lease_after_restart(js: object) -> None:
    k = key()
    assert await KVLeaseElector(js, key=k, ttl=TTL, holder_id="A").tick()
    assert await KVLeaseElector(js, key=k, ttl=TTL, holder_id="A").tick()
    assert not await KVLeaseElector(js, key=k, ttl=TTL, holder_id="B").tick()


async def test_always_leader() -> None:
    e = AlwaysLeader()
    assert e.is_leader() and e.acquired.is_set()
    t = asyncio.create_task(e.run())
    await e.stop()
    await asyncio.wait_for(t, 1)


def test_ttl_below_one_second_is_rejected() -> None:
    with pytest.raises(ValueError, match="ttl"):
        KVLeaseElector(object(), ttl=0.5)


async def test_a_cancel_swallowed_inside_a_tick_still_stops_the_loop(js: object) -> None:
    # Python 3.11's asyncio.wait_for (inside nats-py requests) returns a result that
    # arrives together with a cancel instead of raising: run() must stop anyway.
    a = KVLeaseElector(js, key=key(), ttl=TTL, holder_id="A")
    ticking = asyncio.Event()

    async def swallowing_tick() -> bool:
        ticking.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return False  # what wait_for does when the reply and the cancel coincide
        return False

    a.tick = swallowing_tick  # type: ignore[method-assign]
    task = asyncio.create_task(a.run())
    await asyncio.wait_for(ticking.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)  # before the fix: ran on, and this timed out
