"""in_lanes: bounded concurrency, results in item order, exceptions kept per item."""

from __future__ import annotations

import asyncio

import pytest

from ebind.workflow._lanes import in_lanes


async def test_results_in_item_order_with_at_most_width_at_once() -> None:
    running, peak = 0, 0

    async def work(n: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001 * (n % 3))  # finish out of order
        running -= 1
        return n * 10

    assert await in_lanes(work, list(range(20)), 4) == [n * 10 for n in range(20)]
    assert peak == 4


async def test_each_failure_stays_in_its_slot_and_the_rest_still_run() -> None:
    async def work(n: int) -> int:
        if n % 2:
            raise ValueError(f"odd {n}")
        return n

    out = await in_lanes(work, [0, 1, 2, 3], 2)
    assert out[0] == 0 and out[2] == 2
    assert [str(e) for e in (out[1], out[3])] == ["odd 1", "odd 3"]


async def test_no_items_and_one_item() -> None:
    async def work(n: int) -> int:
        return n

    assert await in_lanes(work, [], 8) == []
    assert await in_lanes(work, [5], 8) == [5]


async def test_a_cancel_is_not_swallowed() -> None:
    async def work(n: int) -> int:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await in_lanes(work, [1], 4)
