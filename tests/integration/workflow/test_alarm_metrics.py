"""Alarm metrics on real NATS: sweeps, live DAGs, leadership, redeliveries, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from wf_app import app as shared_app
from wf_app import echo, fail

from ebind import NonRetryable, RetryPolicy, observe
from ebind.app import App
from ebind.contrib.prometheus import PrometheusMetrics, prometheus_middleware
from ebind.workflow import DAG, DAGStatus

FAST_SWEEPS = {"sweep_check_interval": 0.2, "sweep_interval": 0.5, "nak_delay": 0.1}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(registry: CollectorRegistry) -> Samples:
    text = prometheus_client.generate_latest(registry).decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def until(registry: CollectorRegistry, check: Any, within: float = 20.0) -> Samples:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        samples = scrape(registry)
        if check(samples):
            return samples
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"metrics never matched: {sorted(samples.items())}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def metered_worker(
    nats_url: str, metrics: PrometheusMetrics, **wf_options: Any
) -> AsyncIterator[App]:
    """A scheduling worker (own App, fast sweeps) whose attempts pass through ``metrics``."""
    a = App("wftest", nats_url=nats_url)
    a.registry = shared_app.registry
    await a.connect()
    a.configure_workflow(**{**FAST_SWEEPS, **wf_options})
    w = a.worker(worker_id="metered", ack_wait=2.0, shutdown_grace=1.0, middleware=[metrics])
    task = asyncio.create_task(w.run())
    try:
        await w.wait_ready()
        yield a
    finally:
        await w.stop()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        await a.workflow.close()
        await a.close()


async def wait_status(app: App, dag_id: str, want: DAGStatus) -> None:
    for _ in range(200):
        meta, _ = await app.workflow.info(dag_id)
        if meta.status is want:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{dag_id} never reached {want}")


async def test_sweeps_live_dags_leadership_redeliveries_and_dead_letters_are_exported(
    app: App, nats_url: str
) -> None:
    flaky_runs: list[int] = []

    @app.task(name="alarm.flaky", retry=RetryPolicy(initial_interval=0.1, maximum_attempts=3))
    async def flaky(x: int) -> int:
        flaky_runs.append(x)
        if len(flaky_runs) == 1:
            raise RuntimeError("first attempt fails")
        return x

    @app.task(name="alarm.doomed", retry=RetryPolicy.none())
    async def doomed() -> None:
        raise NonRetryable("never works")

    registry = CollectorRegistry()
    metrics = prometheus_middleware(registry, app=app)
    try:
        before = scrape(registry)
        assert value(before, "ebind_scheduler_leader") == 0.0
        assert value(before, "ebind_worker_stuck_threads") == 0.0
        assert value(before, "ebind_sweep_duration_seconds_count") == 0.0

        async with metered_worker(nats_url, metrics):
            live = DAG(id="alarm-live")
            live.step("gate", echo, 1, wait_for_signals=["go"])
            await live.submit(app.workflow)
            # The leader sweeps on acquiring the lease and every 0.5 s afterwards.
            s = await until(
                registry,
                lambda m: (
                    value(m, "ebind_scheduler_leader") == 1.0
                    and value(m, "ebind_dags_live") == 1.0
                    and value(m, "ebind_sweep_duration_seconds_count") >= 2
                ),
            )
            assert 0 < value(s, "ebind_sweep_duration_seconds_sum") < 5
            assert value(s, "ebind_sweep_timeouts_total") == 0.0

            assert await (await flaky.delay(5)).result(timeout=15) == 5
            s = scrape(registry)
            assert value(s, "ebind_redeliveries_total") >= 1.0

            with contextlib.suppress(Exception):
                await (await doomed.delay()).result(timeout=15)
            failing = DAG(id="alarm-fails")
            failing.step("f", fail, "nope")
            await failing.submit(app.workflow)
            await wait_status(app, failing.id, DAGStatus.FAILED)
            s = await until(
                registry, lambda m: value(m, "ebind_dead_letters_total", kind="handler") >= 2
            )
            assert value(s, "ebind_tasks_expired_total") == 0.0  # nothing ran out of time

            await app.workflow.signal(live.id, "go")
            await wait_status(app, live.id, DAGStatus.DONE)
            await until(registry, lambda m: value(m, "ebind_dags_live") == 0.0)
        after = scrape(registry)
        assert value(after, "ebind_scheduler_leader") == 0.0  # its scheduler stopped
    finally:
        metrics.close()


async def test_a_sweep_past_its_time_out_is_counted(app: App, nats_url: str) -> None:
    registry = CollectorRegistry()
    metrics = prometheus_middleware(registry, app=app)
    try:
        async with metered_worker(nats_url, metrics, sweep_timeout=1e-6):
            s = await until(registry, lambda m: value(m, "ebind_sweep_timeouts_total") >= 1)
            assert value(s, "ebind_sweep_duration_seconds_count") >= 1
    finally:
        metrics.close()


def test_an_expired_dead_letter_counts_as_an_expired_task() -> None:
    registry = CollectorRegistry()
    metrics = prometheus_middleware(registry)
    try:
        observe.emit(observe.DEAD_LETTERED, kind="expired")
        observe.emit(observe.DEAD_LETTERED, kind="timeout")
        observe.emit(observe.SWEEP_FAILED, seconds=0.1, error="boom")
    finally:
        metrics.close()
    observe.emit(observe.DEAD_LETTERED, kind="expired")  # after close: not counted
    s = scrape(registry)
    assert value(s, "ebind_tasks_expired_total") == 1.0
    assert value(s, "ebind_dead_letters_total", kind="expired") == 1.0
    assert value(s, "ebind_dead_letters_total", kind="timeout") == 1.0
    assert value(s, "ebind_sweep_failures_total") == 1.0

    assert prometheus_middleware(registry) is metrics  # asking again resumes counting
    try:
        observe.emit(observe.DEAD_LETTERED, kind="expired")
    finally:
        metrics.close()
    assert value(scrape(registry), "ebind_tasks_expired_total") == 2.0
