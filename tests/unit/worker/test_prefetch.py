"""How many deliveries a worker holds beyond its slots, and the intake that follows it."""

from __future__ import annotations

import asyncio

import pytest

from ebind.worker.prefetch import (
    DEFAULT_PREFETCH,
    HORIZON,
    SlotPace,
    check_prefetch,
    held_ahead,
)
from ebind.worker.pull import Budget


def test_nothing_is_held_ahead_before_a_slot_time_is_known() -> None:
    assert held_ahead(16, None, DEFAULT_PREFETCH) == 0


def test_prefetch_one_holds_only_what_runs() -> None:
    assert held_ahead(16, 1e-6, 1) == 0
    assert held_ahead(16, 0.0, 1) == 0


def test_short_tasks_hold_up_to_prefetch_minus_one_rounds() -> None:
    assert held_ahead(16, 1e-4, 4) == 48
    assert held_ahead(16, 0.0, 4) == 48
    assert held_ahead(1, 1e-4, 2) == 1


def test_what_the_slots_start_within_the_horizon_is_held() -> None:
    # 16 slots each freed every 5 ms start 32 deliveries within 10 ms.
    assert pytest.approx(0.010) == HORIZON
    assert held_ahead(16, 0.005, 4) == 32
    assert held_ahead(16, 0.020, 4) == 8
    assert held_ahead(16, 0.100, 4) == 1


def test_tasks_of_a_tenth_of_a_second_or_longer_hold_nothing_ahead() -> None:
    assert held_ahead(16, 0.161, 4) == 0
    assert held_ahead(8, 0.1, 4) == 0
    assert held_ahead(16, 30.0, 100) == 0


@pytest.mark.parametrize("bad", [0, -1, True, False, 2.5, "4", None])
def test_prefetch_must_be_a_whole_number_of_at_least_one(bad: object) -> None:
    with pytest.raises(ValueError, match="prefetch must be a whole number >= 1"):
        check_prefetch(bad)


def test_valid_prefetch_is_returned() -> None:
    assert check_prefetch(1) == 1
    assert check_prefetch(4) == 4


def test_slot_pace_starts_at_the_first_time_then_moves_a_tenth_of_the_way() -> None:
    pace = SlotPace()
    assert pace.seconds is None
    assert pace.record(0.010) == pytest.approx(0.010)
    assert pace.record(0.020) == pytest.approx(0.011)
    assert pace.record(-5.0) == pytest.approx(0.0099)  # a clock step back counts as zero


def test_the_pace_follows_tasks_that_grow_long() -> None:
    pace = SlotPace()
    for _ in range(10):
        pace.record(0.0005)
    assert held_ahead(16, pace.seconds, 4) == 48
    for _ in range(60):
        pace.record(1.0)
    assert held_ahead(16, pace.seconds, 4) == 0


def test_budget_room_counts_the_deliveries_held_ahead() -> None:
    budget = Budget(16)
    budget.held, budget.requested = 10, 6
    assert budget.free() == 0
    budget.hold_ahead(48)
    assert budget.free() == 48
    budget.hold_ahead(0)
    assert budget.free() == 0


async def test_more_room_wakes_waiting_pullers_and_less_does_not() -> None:
    budget = Budget(4)
    budget.held = 4
    budget.hold_ahead(2)
    waiting = budget.waiter(3)
    budget.hold_ahead(1)  # less room: nobody is woken
    await asyncio.sleep(0)
    assert not waiting.done()
    budget.hold_ahead(3)  # three free now, the threshold
    assert waiting.done()


async def test_idle_slot_overdraft_ignores_the_deliveries_held_ahead() -> None:
    # A claim puller overdrafts only while some slot runs nothing; holding deliveries
    # ahead does not count as an idle slot.
    budget = Budget(2)
    budget.hold_ahead(6)
    budget.held = 3  # two running, one waiting for a slot
    overdraft = budget.waiter(99, overdraft=True)
    budget.wake(budget.free())
    assert not overdraft.done()
    budget.held = 1
    budget.wake(budget.free())
    assert overdraft.done()
