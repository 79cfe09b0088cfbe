"""Flow control and execution keep their promises: a concurrency slot outlives a sync handler's
overrun, a deadline that passes during a wait stops the start, a revoked process-pool call is
killed, and a producer cannot lift the worker's time limit."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import pytest
from worker_helpers import running, wait_for

from ebind.app import App
from ebind.errors import TaskFailed
from ebind.retry import RetryPolicy

pytestmark = pytest.mark.timeout(60)


async def test_a_sync_handler_past_its_timeout_keeps_its_concurrency_slot(app: App) -> None:
    """concurrency=1 promises at most one call of a key running at once, cluster-wide.

    A sync (thread-pool) handler past its ``timeout`` keeps running in its thread (a thread
    cannot be interrupted): its concurrency slot stays held until the thread returns, so the
    next call of the same key never runs beside it.
    """
    lock = threading.Lock()
    now_running = [0]
    most = [0]
    release = threading.Event()

    @app.task(name="lim.conc_overrun", concurrency=1, timeout=0.3, retry=RetryPolicy.none())
    def work(n: int) -> int:
        with lock:
            now_running[0] += 1
            most[0] = max(most[0], now_running[0])
        try:
            release.wait(3.0)  # ignores the timeout, as a thread cannot be interrupted
        finally:
            with lock:
                now_running[0] -= 1
        return n

    async with running(app, concurrency=4):
        first = await work.delay(1)
        await wait_for(lambda: now_running[0] == 1, 10)
        with pytest.raises(TaskFailed):
            await first.result(10)  # the attempt failed with timeout; its thread still runs
        second = await work.delay(2)
        with contextlib.suppress(AssertionError):
            await wait_for(lambda: most[0] >= 2, 2.0)  # the second starting too soon
        release.set()
        with contextlib.suppress(TaskFailed):
            await second.result(10)
    assert most[0] == 1, f"{most[0]} calls of one concurrency=1 key ran at once"


async def test_a_deadline_that_passes_while_waiting_for_a_rate_token_stops_the_start(
    app: App,
) -> None:
    """``deadline=`` means the task must not start after it; a wait for a token is no start.

    A held delivery (its token due within the 2 s hold limit) sleeps; the deadline is checked
    again right before the handler starts, so a task whose deadline passed meanwhile fails as
    ``deadline`` without running.
    """
    started: list[tuple[int, float]] = []

    @app.task(name="lim.rate_deadline", rate_limit="1/s", retry=RetryPolicy.none())
    def work(n: int) -> int:
        started.append((n, time.time()))
        return n

    async with running(app, concurrency=4):
        first = await work.delay(1)
        assert await first.result(10) == 1
        deadline = time.time() + 0.3
        late = await work.apply_async((2,), deadline=0.3)  # its token is ~1 s away
        try:
            outcome: object = await late.result(10)
        except TaskFailed as exc:
            outcome = exc.error.kind
    late_starts = [round(at - deadline, 2) for n, at in started if n == 2 and at > deadline]
    assert late_starts == [], (
        f"handler started {late_starts} s after the task's deadline (outcome {outcome!r})"
    )
    assert outcome == "deadline"


async def test_a_deadline_that_passes_while_waiting_for_a_concurrency_slot_stops_the_start(
    app: App,
) -> None:
    """The same for a delivery held for a concurrency slot (held up to ``hold``, 10 s)."""
    started: list[tuple[int, float]] = []
    gate = threading.Event()

    @app.task(name="lim.conc_deadline", concurrency=1, retry=RetryPolicy.none())
    def work(n: int) -> int:
        started.append((n, time.time()))
        if n == 1:
            gate.wait(5)
        return n

    async with running(app, concurrency=4):
        first = await work.delay(1)
        await wait_for(lambda: len(started) == 1, 10)
        deadline = time.time() + 0.3
        late = await work.apply_async((2,), deadline=0.3)
        await asyncio.sleep(1.0)
        gate.set()
        assert await first.result(10) == 1
        try:
            outcome: object = await late.result(10)
        except TaskFailed as exc:
            outcome = exc.error.kind
    late_starts = [round(at - deadline, 2) for n, at in started if n == 2 and at > deadline]
    assert late_starts == [], (
        f"handler started {late_starts} s after the task's deadline (outcome {outcome!r})"
    )
    assert outcome == "deadline"


async def test_a_revoked_task_in_a_process_pool_child_is_stopped(app: App, tmp_path: Any) -> None:
    """A revoked task running in a process-pool child is stopped by killing the child.

    The child's Context is a copy, which a revocation cannot reach; the worker cancels the
    call instead, which kills the child, and the waiter gets ``revoked`` at once.
    """
    import pool_limits_app

    for handle in {id(t): t for t in pool_limits_app.app.tasks.values()}.values():
        app.registry.register(handle.spec)
    pid_file = tmp_path / "child.pid"
    async with running(app, pool="process", processes=1, app_path="pool_limits_app:app"):
        fut = await app.enqueue("lim.pool_revocable", str(pid_file), 8.0)
        await wait_for(lambda: pid_file.exists() and bool(pid_file.read_text()), 20)
        await app.revoke(fut.id)
        t0 = time.monotonic()
        try:
            outcome: object = await fut.result(15)
        except TaskFailed as exc:
            outcome = exc.error.kind
        took = time.monotonic() - t0
    assert outcome == "revoked"
    assert took < 3.0, f"the revoked handler ran on for {took:.1f}s in its child"


async def test_a_producer_cannot_lift_a_process_pool_tasks_hard_time_limit(
    app: App, nats_url: str
) -> None:
    """The worker's ``timeout=1`` on a process-pool task is its hard limit (the child is killed).

    The envelope's ``timeout`` (copied by the producer from its own registration) may only
    shorten it: a producer whose definition says ``timeout=3600`` (stale code, or hostile)
    cannot keep a child busy past the worker's limit.
    """
    import pool_limits_app

    for handle in {id(t): t for t in pool_limits_app.app.tasks.values()}.values():
        app.registry.register(handle.spec)
    async with App("lim-producer", nats_url=nats_url) as producer:

        @producer.task(name="lim.pool_hard", timeout=3600.0, retry=RetryPolicy.none())
        def hard(seconds: float) -> str:
            raise AssertionError("never runs here")

        async with running(app, pool="process", processes=1, app_path="pool_limits_app:app"):
            fut = await hard.delay(6.0)
            t0 = time.monotonic()
            try:
                outcome: object = await fut.result(15)
            except TaskFailed as exc:
                outcome = exc.error.kind
            took = time.monotonic() - t0
    assert (outcome, took < 4.0) == ("timeout", True), (
        f"outcome {outcome!r} after {took:.1f}s; the worker's limit is 1 s"
    )
