"""Budget: a handler that returned frees its slot while its response is stored, up to a cap."""

from __future__ import annotations

import asyncio

from ebind.worker.pull import Budget


def test_a_handed_over_message_frees_its_slot() -> None:
    budget = Budget(2)
    budget.held = 2
    assert budget.free() == 0
    assert budget.hand_over()
    assert (budget.held, budget.finishing, budget.free()) == (1, 1, 1)
    budget.release_finishing()
    assert (budget.held, budget.finishing, budget.free()) == (1, 0, 1)


def test_at_most_capacity_messages_finish_without_a_slot() -> None:
    budget = Budget(2)
    budget.held = 2
    assert budget.hand_over() and budget.hand_over()
    budget.held = 2  # two more handlers running
    assert not budget.hand_over()  # the third keeps its slot: at most 2 x 2 messages held
    assert (budget.held, budget.finishing, budget.free()) == (2, 2, 0)
    budget.release_finishing()
    assert budget.hand_over()
    assert (budget.held, budget.finishing) == (1, 2)


async def test_a_hand_over_wakes_a_puller_waiting_for_a_slot() -> None:
    budget = Budget(1)
    budget.held = 1
    waiting = budget.waiter(1)
    assert not waiting.done()
    assert budget.hand_over()
    await asyncio.sleep(0)
    assert waiting.done()
