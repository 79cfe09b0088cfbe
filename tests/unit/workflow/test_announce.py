"""What a worker's liveness record lists: bounded, current, released steps forgotten in time."""

from __future__ import annotations

import asyncio

import pytest

from ebind.workflow.announce import (
    ANNOUNCE_MARGIN,
    DEFAULT_ANNOUNCE_LIMIT,
    Announced,
    announce_limit,
    announced_steps,
    expired_keys,
    release_until,
)
from ebind.workflow.liveness import Announcer, MemLiveness, NatsLiveness, record_ttl_header


def test_limit_is_concurrency_plus_margin() -> None:
    assert announce_limit(4) == 4 + ANNOUNCE_MARGIN
    assert announce_limit(None) == DEFAULT_ANNOUNCE_LIMIT


def test_limit_refuses_a_worker_without_slots() -> None:
    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        announce_limit(0)


def test_release_lasts_until_redelivery_plus_grace() -> None:
    assert release_until(None, 100.0, 2.0, 1.0) == 103.0


def test_release_never_shortens_an_earlier_one() -> None:
    assert release_until(110.0, 100.0, 0.0, 1.0) == 110.0
    assert release_until(101.0, 100.0, 5.0, 1.0) == 106.0


def test_negative_delays_count_as_none() -> None:
    assert release_until(None, 100.0, -3.0, -1.0) == 100.0


def test_expired_keys_are_only_released_ones_past_their_time() -> None:
    entries = {
        "d:run": Announced(token=(1, 1), since=1.0),
        "d:gone": Announced(token=(1, 1), since=1.0, until=5.0),
        "d:soon": Announced(token=(1, 1), since=1.0, until=50.0),
    }
    assert expired_keys(entries, 10.0) == ["d:gone"]


def test_running_steps_come_first_newest_first() -> None:
    entries = {
        "d:old-run": Announced(token=None, since=1.0),
        "d:released": Announced(token=None, since=9.0, until=100.0),
        "d:new-run": Announced(token=None, since=5.0),
    }
    steps, left_out = announced_steps(entries, 10.0, limit=10)
    assert steps == ["d:new-run", "d:old-run", "d:released"]
    assert left_out == 0


def test_cap_drops_released_steps_before_running_ones() -> None:
    entries = {f"d:r{i}": Announced(token=None, since=float(i), until=100.0) for i in range(50)}
    entries["d:running"] = Announced(token=None, since=0.0)
    steps, left_out = announced_steps(entries, 10.0, limit=3)
    assert steps == ["d:running", "d:r49", "d:r48"]
    assert left_out == 48


def test_expired_releases_are_not_listed_nor_counted() -> None:
    entries = {"d:gone": Announced(token=None, since=1.0, until=5.0)}
    assert announced_steps(entries, 10.0, limit=3) == ([], 0)


def test_byte_budget_bounds_long_keys() -> None:
    key = "d" * 500
    entries = {f"{key}:{i}": Announced(token=None, since=float(i)) for i in range(1000)}
    steps, left_out = announced_steps(entries, 0.0, limit=10_000, max_bytes=10_000)
    assert sum(len(s) + 3 for s in steps) <= 10_000
    assert len(steps) + left_out == 1000 and left_out > 0


def test_record_ttl_header_is_milliseconds_and_at_least_a_second() -> None:
    assert record_ttl_header(30.0) == "30000ms"
    assert record_ttl_header(0.2) == "1000ms"


def test_record_ttl_must_outlast_the_liveness_ttl() -> None:
    with pytest.raises(ValueError, match="must exceed the liveness ttl"):
        NatsLiveness(object(), ttl=5.0, record_ttl=5.0)
    assert NatsLiveness(object(), ttl=5.0).record_ttl == 10.0


async def test_announcer_release_fenced_by_the_delivery() -> None:
    ann = Announcer(MemLiveness(), interval=0.05, release_grace=0.0)
    try:
        ann.add("w", "d:s", (2, 7))
        ann.release("w", "d:s", (1, 7), 0.0)  # an older attempt: not the owner
        ann.release("w", "d:s", (2, 6), 0.0)  # another generation: not the owner
        assert ann.listed("w") == ["d:s"]
        ann.release("w", "d:s", (2, 7), 0.0)
        assert ann.listed("w") == []
        assert "d:s" not in ann.running["w"]
    finally:
        await ann.close()


async def test_announcer_keeps_a_release_until_its_redelivery_is_due() -> None:
    ann = Announcer(MemLiveness(), interval=0.05, release_grace=0.05)
    try:
        ann.add("w", "d:s", (1, 1))
        ann.release("w", "d:s", (1, 1), 0.1)
        assert ann.listed("w") == ["d:s"]
        await asyncio.sleep(0.2)
        assert ann.listed("w") == []
    finally:
        await ann.close()


async def test_announcer_record_stays_bounded_by_concurrency() -> None:
    live = MemLiveness()
    ann = Announcer(live, interval=0.01, release_grace=60.0)
    ann.set_concurrency("w", 2)
    try:
        for i in range(500):  # steps failing and retried elsewhere, faster than they expire
            ann.add("w", f"d:{i}", (1, 1))
            ann.release("w", f"d:{i}", (1, 1), 30.0)
        ann.add("w", "d:running", (1, 1))
        await asyncio.sleep(0.05)
        view = await live.view("w")
        assert len(view.steps) == 2 + ANNOUNCE_MARGIN
        assert "d:running" in view.steps
    finally:
        await ann.close()
