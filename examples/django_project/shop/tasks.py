"""The shop's tasks: found by ebind.contrib.django's discovery, in the worker and the web."""

from __future__ import annotations

from mysite.ebind_app import app

import ebind


@app.task(name="shop.total")
def total(prices: list[int], discount_pct: int = 0) -> int:
    if not 0 <= discount_pct <= 100:
        raise ebind.NonRetryable(f"discount {discount_pct}% is not 0..100", kind="bad_input")
    return sum(prices) * (100 - discount_pct) // 100


@app.task(name="shop.place_order")
def place_order(customer: str, prices: list[int]) -> str:
    return f"order for {customer}: {len(prices)} items, {sum(prices)} cents"
