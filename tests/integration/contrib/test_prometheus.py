"""Prometheus middleware on a real worker: counters, histogram, in-flight, DLQ gauge."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from ebind import observe
from ebind.app import App
from ebind.context import Context
from ebind.contrib.prometheus import prometheus_middleware, start_metrics_server
from ebind.errors import TaskFailed
from ebind.retry import RetryPolicy


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_after_tasks_are_scraped_over_http(app: App, run_worker: Any) -> None:
    @app.task(name="ok")
    async def ok(x: int) -> int:
        return x

    @app.task(name="boom", retry=RetryPolicy(initial_interval=0.1, maximum_attempts=2))
    async def boom() -> None:
        raise RuntimeError("nope")

    registry = CollectorRegistry()
    metrics = prometheus_middleware(registry, app=app)
    server = start_metrics_server(0, addr="127.0.0.1", registry=registry)
    try:
        async with run_worker(app, middleware=[metrics]):
            for i in range(3):
                assert await (await ok.delay(i)).result(timeout=10) == i
            with pytest.raises(TaskFailed):
                await (await boom.delay()).result(timeout=10)
            # the scrape hops onto this loop to read EBIND_DLQ: run it off the loop
            m = await asyncio.to_thread(_scrape, server.url)
    finally:
        server.close()
    assert m[("ebind_tasks_total", (("outcome", "succeeded"), ("task", "ok")))] == 3
    assert m[("ebind_tasks_total", (("outcome", "retrying"), ("task", "boom")))] == 1
    assert m[("ebind_tasks_total", (("outcome", "dead_lettered"), ("task", "boom")))] == 1
    assert m[("ebind_task_retries_total", (("task", "boom"),))] == 1
    assert m[("ebind_task_duration_seconds_count", (("task", "ok"),))] == 3
    assert m[("ebind_task_duration_seconds_count", (("task", "boom"),))] == 2
    assert m[("ebind_tasks_in_flight", (("task", "ok"),))] == 0
    assert m[("ebind_dlq_messages", ())] == 1


async def test_one_metrics_object_per_registry(app: App) -> None:
    registry = CollectorRegistry()
    first = prometheus_middleware(registry)
    assert prometheus_middleware(registry, app=app) is first
    assert first.app is app
    assert await first.refresh_dlq() == 0
    assert first.dlq_for_scrape() == 0  # on the loop: the cached value, no blocking


async def test_progress_reports_are_counted_with_their_fractions(app: App, run_worker: Any) -> None:
    @app.task(name="prog")
    async def prog(ctx: Context) -> int:
        await ctx.progress(0.35, note="a third")
        return 1

    registry = CollectorRegistry()
    metrics = prometheus_middleware(registry, app=app)
    try:
        async with run_worker(app, middleware=[metrics]):
            assert await (await prog.delay()).result(timeout=10) == 1
    finally:
        metrics.close()
    assert registry.get_sample_value("ebind_progress_reports_total", {"task": "prog"}) == 1
    assert registry.get_sample_value("ebind_progress_fraction_bucket", {"le": "0.3"}) == 0
    assert registry.get_sample_value("ebind_progress_fraction_bucket", {"le": "0.4"}) == 1


async def test_concurrency_waits_are_counted(app: App, run_worker: Any) -> None:
    gate = asyncio.Event()

    @app.task(name="limited", concurrency=1)
    async def limited(n: int) -> int:
        if n == 0:
            await gate.wait()
        return n

    registry = CollectorRegistry()
    metrics = prometheus_middleware(registry, app=app)

    def count(action: str) -> float:
        got = registry.get_sample_value(
            "ebind_concurrency_waits_total", {"task": "limited", "action": action}
        )
        return got or 0.0

    waiting = asyncio.Event()
    stop = observe.subscribe(
        lambda event, _: waiting.set() if event == observe.CONCURRENCY_WAIT else None
    )
    try:
        async with run_worker(app, middleware=[metrics], concurrency=4):
            first = await limited.delay(0)
            await asyncio.sleep(0.2)
            second = await limited.delay(1)
            await asyncio.wait_for(waiting.wait(), 10)
            gate.set()
            assert [await first.result(10), await second.result(10)] == [0, 1]
    finally:
        stop()
        metrics.close()
    assert count("waited") >= 1
