"""Lane pullers and execution slots: higher bands are pulled and started first."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest

from ebind.worker.gate import RankedSlots
from ebind.worker.pull import Budget, Puller


class _Conn:
    """Records pull requests instead of sending them."""

    is_closed = False

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, int]]] = []

    def new_inbox(self) -> str:
        return "_INBOX.t"

    async def subscribe(self, subject: str, cb: Any) -> Any:
        return None

    async def publish(self, subject: str, body: bytes, reply: str = "") -> None:
        self.sent.append((subject.rsplit(".", 1)[1], json.loads(body)))


def _lane(nc: _Conn, budget: Budget, durable: str, rank: int) -> Puller:
    p = Puller(
        nc,
        stream="EBIND_TASKS",
        durable=durable,
        budget=budget,
        on_msg=lambda m, p: None,
        expires=1.0,
        rank=rank,
        idle_expires=5.0,
    )
    p._inbox = nc.new_inbox()  # what start() sets, without its pull loop
    return p


async def _step(p: Puller) -> None:
    # one decision: it either requests at once or parks on a waiter (then gives up)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(p._step_lane(), 0.05)


async def test_idle_lanes_each_keep_one_uncounted_probe() -> None:
    nc, budget = _Conn(), Budget(2)
    lanes = [_lane(nc, budget, f"d{r}", r) for r in range(3)]
    for p in lanes:
        await _step(p)
    assert nc.sent == [(f"d{r}", {"batch": 1, "expires": 5_000_000_000}) for r in range(3)]
    assert budget.requested == 0  # probes promise no slot


async def test_a_lane_with_a_backlog_asks_for_free_slots_only() -> None:
    nc, budget = _Conn(), Budget(4)
    budget.held = 1
    budget.reserved["d1"] = 10
    await _step(_lane(nc, budget, "d1", 1))
    assert nc.sent == [("d1", {"batch": 3, "expires": 1_000_000_000})]
    assert budget.requested == 3


async def test_a_lower_band_waits_while_a_higher_one_has_a_backlog() -> None:
    nc, budget = _Conn(), Budget(4)
    budget.reserved.update({"high": 2, "low": 5})
    high, low = _lane(nc, budget, "high", 0), _lane(nc, budget, "low", 2)
    await _step(low)
    assert nc.sent == []  # neither a counted request nor a probe: work is known elsewhere
    await _step(high)
    assert nc.sent == [("high", {"batch": 2, "expires": 1_000_000_000})]
    await _step(low)  # two slots still free, and the high band asked for all it has seen
    assert nc.sent[-1] == ("low", {"batch": 2, "expires": 1_000_000_000})


def test_a_claims_backlog_ranks_above_every_band() -> None:
    budget = Budget(4)
    budget.reserved["ebind-targets-x"] = 1  # a claim (rank -1) with a backlog comes first
    assert budget.backlog_above(0)
    assert not budget.backlog_above(-1)


async def test_waiters_are_woken_in_rank_order() -> None:
    budget = Budget(1)
    budget.held = 1
    woken: list[int] = []
    futs = [(r, budget.waiter(1, rank=r)) for r in (2, 0, 1)]
    for r, fut in futs:
        fut.add_done_callback(lambda _, r=r: woken.append(r))
    budget.release()
    await asyncio.sleep(0)
    assert woken == [0, 1, 2]


async def test_slots_go_to_the_best_rank_then_first_come() -> None:
    slots = RankedSlots(1)
    await slots.acquire(2)  # the only slot
    order: list[str] = []

    async def run(label: str, rank: int) -> None:
        await slots.acquire(rank)
        order.append(label)
        slots.release()

    tasks = [
        asyncio.create_task(run(label, rank))
        for label, rank in (("low", 2), ("high-1", 0), ("normal", 1), ("high-2", 0))
    ]
    await asyncio.sleep(0)
    assert slots.waiting == 4
    slots.release()
    await asyncio.gather(*tasks)
    assert order == ["high-1", "high-2", "normal", "low"]


async def test_a_cancelled_waiter_gives_up_its_place_without_losing_a_slot() -> None:
    slots = RankedSlots(1)
    await slots.acquire(0)
    waiting = asyncio.create_task(slots.acquire(0))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert slots.waiting == 0
    slots.release()
    await asyncio.wait_for(slots.acquire(1), 1)  # the slot came back to the pool


async def test_a_slot_handed_to_a_waiter_cancelled_at_once_passes_on() -> None:
    slots = RankedSlots(1)
    await slots.acquire(0)
    first = asyncio.create_task(slots.acquire(0))
    second = asyncio.create_task(slots.acquire(1))
    await asyncio.sleep(0)
    slots.release()  # hands the slot to `first` ...
    first.cancel()  # ... which is cancelled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)


async def test_a_busy_worker_still_probes_lanes_holding_nothing() -> None:
    """Every slot runs low-band work: the high lane still sees new work, one message at a
    time, while the busy low lane (holding messages, backlog known) asks for nothing."""
    nc, budget = _Conn(), Budget(2)
    high, low = _lane(nc, budget, "high", 0), _lane(nc, budget, "low", 2)
    budget.held = 2
    low._inflight = low._unstarted = 2
    budget.reserved["low"] = 2
    await _step(low)
    await _step(high)
    assert nc.sent == [("high", {"batch": 1, "expires": 5_000_000_000})]
    high._inflight = high._unstarted = 1  # its probe delivered: it waits for a slot ...
    high._requests.clear()  # its probe was answered
    await _step(high)
    assert len(nc.sent) == 1  # ... and probes no more until it starts
    high.started()
    await _step(high)
    assert len(nc.sent) == 2


async def test_a_taken_slot_is_repaid_before_any_waiter_runs() -> None:
    slots = RankedSlots(1)
    await slots.acquire(0)
    slots.take()  # the running task's thread outlives it
    waiter = asyncio.create_task(slots.acquire(0))
    await asyncio.sleep(0)
    slots.release()  # the task ends: its slot repays the take, the thread still holds one
    await asyncio.sleep(0)
    assert not waiter.done()
    slots.release()  # the thread returns
    await asyncio.wait_for(waiter, 1)


async def test_an_idle_lane_is_not_woken_by_releases_while_deliveries_are_held_ahead() -> None:
    # With room for deliveries held ahead, every release leaves more free than the slots:
    # a lane that has seen no backlog must still sleep until a delivery or a kick.
    nc, budget = _Conn(), Budget(16)
    lane = _lane(nc, budget, "d0", 1)
    await _step(lane)  # its probe
    step = asyncio.create_task(lane._step_lane())  # parks: nothing seen waiting
    await asyncio.sleep(0)
    budget.hold_ahead(48)
    budget.held = 3
    for _ in range(3):
        budget.release()
    await asyncio.sleep(0.01)
    try:
        assert not step.done(), "an idle lane woke up for a release"
        assert len(nc.sent) == 1
    finally:
        step.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await step


async def test_only_the_highest_band_with_work_fills_the_room_held_ahead() -> None:
    # A low message held ahead of the slots could start before a high message still on
    # its way: while a higher band holds messages, a lower one gets the slots' room only.
    nc, budget = _Conn(), Budget(4)
    budget.hold_ahead(12)
    high, low = _lane(nc, budget, "high", 0), _lane(nc, budget, "low", 2)
    budget.reserved["low"] = 20
    high._inflight = 1  # a high message runs
    budget.held = 1
    await _step(low)
    assert nc.sent == [("low", {"batch": 3, "expires": 1_000_000_000})]  # 4 slots - 1 held
    high._inflight = 0  # the high band is idle: the low band may hold ahead too
    await _step(low)
    assert nc.sent[-1] == ("low", {"batch": 12, "expires": 1_000_000_000})


def test_a_higher_band_with_a_backlog_counts_as_busy() -> None:
    budget = Budget(4)
    high = _lane(_Conn(), budget, "high", 0)
    assert not budget.busy_above(2)
    budget.reserved["high"] = 3
    assert budget.busy_above(2)
    assert not budget.busy_above(0)  # its own band, not a higher one
    assert high.holding is False
