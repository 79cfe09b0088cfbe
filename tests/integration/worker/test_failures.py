"""Failures on a real worker: retries, non-retryable errors, bad inputs, deadlines, crash loops."""

from __future__ import annotations

import asyncio
import importlib
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from worker_helpers import dlq_entries, running, tasks_empty, wait_for

from ebind.app import App
from ebind.errors import NonRetryable, TaskFailed
from ebind.queues import lane_durable
from ebind.retry import RetryPolicy
from ebind.streams import TASKS_STREAM
from ebind.wire import TaskEnvelope

FAST = RetryPolicy(initial_interval=0.2, backoff_coefficient=2.0, maximum_attempts=3)


async def _failed(fut: Any) -> TaskFailed:
    with pytest.raises(TaskFailed) as info:
        await fut.result(20)
    return info.value


async def test_poison_task_retries_with_backoff_then_dead_letters(app: App) -> None:
    """Deliveries == maximum_attempts and the gaps honour next_delay."""
    starts: list[float] = []

    @app.task(name="f.poison", retry=FAST)
    async def poison() -> None:
        starts.append(time.monotonic())
        raise RuntimeError("always broken")

    async with running(app):
        err = await _failed(await poison.delay())
        assert (err.error.kind, err.error.message) == ("handler", "RuntimeError: always broken")
        await wait_for(lambda: _count(dlq_entries(app, "f.poison"), 1))
    assert len(starts) == 3
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[0] >= FAST.next_delay(1) * 0.9
    assert gaps[1] >= FAST.next_delay(2) * 0.9
    (entry,) = await dlq_entries(app, "f.poison")
    assert entry.final_attempt == 3
    assert entry.task is not None and entry.task.name == "f.poison"
    assert entry.error.kind == "handler"
    await wait_for(lambda: tasks_empty(app), 5)


async def _count(entries: Any, n: int) -> bool:
    return len(await entries) == n


async def test_non_retryable_and_dont_retry_run_once(app: App) -> None:
    runs: list[str] = []

    @app.task(name="f.nonretry", retry=FAST)
    async def nonretry() -> None:
        runs.append("nonretry")
        raise NonRetryable("card declined", kind="payment")

    @app.task(name="f.dontretry", retry=FAST, dont_retry=(KeyError,))
    def dontretry() -> None:
        runs.append("dontretry")
        raise KeyError("sku-1")

    async with running(app):
        e1 = await _failed(await nonretry.delay())
        e2 = await _failed(await dontretry.delay())
    assert (e1.error.kind, e1.error.retryable) == ("payment", False)
    assert (e2.error.kind, e2.error.retryable) == ("handler", False)
    assert sorted(runs) == ["dontretry", "nonretry"]


async def test_unknown_task_is_naked_briefly_then_dead_lettered(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Targeted at a worker without its handler: never imported, bounded nak window, DLQ kind
    unknown_handler, worker still healthy. (Untargeted, it waits in its queue instead.)"""
    imported: list[str] = []
    real_import = importlib.import_module

    def spy(name: str, package: str | None = None) -> Any:
        imported.append(name)
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", spy)

    @app.task(name="f.known")
    async def known() -> str:
        return "alive"

    async with running(app, worker_id="f-w"):
        fut = await app.apply_async("no.such.task", (1,), target="f-w")
        err = await _failed(fut)
        assert err.error.kind == "unknown_handler"
        assert await (await known.delay()).result(20) == "alive"
    assert not [n for n in imported if "such" in n]
    (entry,) = await dlq_entries(app, "no.such.task")
    assert entry.error.kind == "unknown_handler"
    assert entry.final_attempt == 3


async def test_malformed_envelope_goes_to_dlq_with_its_raw_bytes(app: App) -> None:
    """Terminated once, DLQ kind decode keeps the bytes; the worker keeps working."""

    @app.task(name="f.after_garbage")
    async def after() -> int:
        return 42

    bad = [b"\x00garbage", b'{"id": "x", "name": ', b'{"name": "f.x"}', b'{"id": 5, "name": []}']
    async with running(app):
        # on a subject the worker consumes (it pulls only lanes it has a handler for)
        for raw in bad:
            await app.js.publish("TASKS.f.after_garbage", raw)
        assert await (await after.delay()).result(20) == 42
        await wait_for(lambda: _count(dlq_entries(app, "f.after_garbage"), len(bad)))
        entries = await dlq_entries(app, "f.after_garbage")
        assert sorted(e.raw for e in entries) == sorted(bad)
        for entry in entries:
            assert entry.error.kind == "decode"
            assert entry.final_attempt == 1
            assert entry.task is None
    await wait_for(lambda: tasks_empty(app), 5)


async def test_wrong_arguments_reaching_the_worker_fail_without_retry(app: App) -> None:
    """Wrong arguments (worker side): kind arg_count / arg_type, one delivery."""
    runs = 0

    @app.task(name="f.typed", retry=FAST)
    async def typed(n: int) -> int:
        nonlocal runs
        runs += 1
        return n

    async def raw(task_id: str, payload: bytes) -> Any:
        env = TaskEnvelope(
            id=task_id,
            name="f.typed",
            payload=msgspec.Raw(payload),
            reply_to=f"RESP.{app.client_id}.{task_id}",
        )
        fut = app.future(task_id, name="f.typed")
        await app.publish_task(env)
        return fut

    async with running(app):
        count = await _failed(await raw("argcount", b"[1, 2, 3]"))
        kind = await _failed(await raw("argtype", b'["x"]'))
        notjson = await _failed(await raw("argdecode", b'{"a": 1}'))
    assert (count.error.kind, count.error.retryable) == ("arg_count", False)
    assert "expects 1 argument" in count.error.message
    assert kind.error.kind == "arg_type"
    assert notjson.error.kind == "decode"
    assert runs == 0
    assert [e.final_attempt for e in await dlq_entries(app, "f.typed")] == [1, 1, 1]


async def test_unserialisable_and_oversized_results_fail_once(app: App) -> None:
    """Unserialisable and oversized results: kind encode, not retried, worker alive."""
    runs: list[str] = []

    @app.task(name="f.unserialisable", retry=FAST)
    async def unserialisable() -> Any:
        runs.append("obj")
        return object()

    @app.task(name="f.huge", retry=FAST)
    async def huge() -> str:
        runs.append("huge")
        return "x" * (app.max_payload + 10)

    async with running(app):
        e1 = await _failed(await unserialisable.delay())
        e2 = await _failed(await huge.delay())
    assert (e1.error.kind, e1.error.retryable) == ("encode", False)
    assert e2.error.kind == "encode" and "max_payload" in e2.error.message
    assert sorted(runs) == ["huge", "obj"]


async def test_expired_deadline_is_not_executed(app: App) -> None:
    """Expired deadline: kind deadline, the handler never starts."""
    runs = 0

    @app.task(name="f.late")
    async def late() -> None:
        nonlocal runs
        runs += 1

    env = TaskEnvelope(
        id="late-1",
        name="f.late",
        reply_to=f"RESP.{app.client_id}.late-1",
        deadline=datetime.now(UTC) - timedelta(seconds=1),
    )
    fut = app.future("late-1", name="f.late")
    await app.publish_task(env)
    async with running(app):
        err = await _failed(fut)
    assert err.error.kind == "deadline"
    assert runs == 0


async def test_handler_timeout_is_retryable_kind_timeout(app: App) -> None:
    starts = 0

    @app.task(
        name="f.slow", timeout=0.2, retry=RetryPolicy(initial_interval=0.05, maximum_attempts=2)
    )
    async def slow() -> None:
        nonlocal starts
        starts += 1
        await asyncio.sleep(5)

    async with running(app):
        err = await _failed(await slow.delay())
    assert (err.error.kind, err.error.retryable) == ("timeout", True)
    assert starts == 2


async def test_crash_loop_guard_dead_letters_before_running(app: App) -> None:
    """Deliveries past the cap (earlier attempts died silently) are not run again."""
    from nats.js.api import AckPolicy, ConsumerConfig

    runs = 0

    @app.task(name="f.crashy", retry=RetryPolicy(maximum_attempts=2))
    async def crashy() -> None:
        nonlocal runs
        runs += 1

    fut = await crashy.delay()
    # Two "workers" take the message and die without acking (ack_wait 0.5 s each time).
    await app.js.add_consumer(
        TASKS_STREAM,
        ConsumerConfig(
            durable_name=lane_durable("f.crashy"),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=0.5,
            max_deliver=-1,
            filter_subject="TASKS.f.crashy",
        ),
    )
    sub = await app.js.pull_subscribe_bind(lane_durable("f.crashy"), stream=TASKS_STREAM)
    for _ in range(2):
        (msg,) = await sub.fetch(1, timeout=5)
        assert msg.metadata.num_delivered == _ + 1
        await asyncio.sleep(0.6)
    await sub.unsubscribe()
    async with running(app):
        err = await _failed(fut)
    assert err.error.kind == "worker_lost"
    assert runs == 0
    (entry,) = await dlq_entries(app, "f.crashy")
    assert entry.final_attempt == 3
    await wait_for(lambda: tasks_empty(app), 5)
