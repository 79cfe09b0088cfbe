"""The finite max_deliver backstop and its advisory turned into a dead letter."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from nats.js.api import AckPolicy, ConsumerConfig
from worker_helpers import dlq_entries, running, tasks_pending, wait_for, worker_consumer

from ebind import RetryPolicy
from ebind.app import App
from ebind.errors import TaskFailed
from ebind.queues import lane_durable
from ebind.streams import DLQ_STREAM, TASKS_STREAM, WORKER_DURABLE, resp_subject, task_subject
from ebind.wire import TaskEnvelope, encoder
from ebind.worker import advisory

UNLIMITED_FAST = RetryPolicy(initial_interval=0.05, maximum_interval=0.05, maximum_attempts=0)


async def test_existing_unlimited_durable_gets_the_finite_limit(app: App) -> None:
    """A durable made by an older worker (max_deliver -1) is updated to the backstop."""

    @app.task(name="md.old")
    async def old() -> None:
        return None

    await app.js.add_consumer(
        TASKS_STREAM,
        config=ConsumerConfig(
            durable_name=lane_durable("md.old"),
            name=lane_durable("md.old"),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=2.0,
            max_deliver=-1,
            filter_subject="TASKS.md.old",
        ),
    )
    assert (await worker_consumer(app, "md.old")).config.max_deliver == -1
    async with running(app):
        info = await worker_consumer(app, "md.old")
        assert info.config.max_deliver == advisory.TASK_MAX_DELIVER


async def test_a_message_out_of_deliveries_is_dead_lettered_once_and_its_caller_answered(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unlimited retry policy stops at the backstop: DLQ kind max_deliveries, raw bytes kept,
    one entry although two workers get the advisory, the message gone, the caller answered."""
    monkeypatch.setattr(advisory, "TASK_MAX_DELIVER", 3)
    runs = 0

    @app.task(name="md.flaky", retry=UNLIMITED_FAST)
    async def flaky() -> int:
        nonlocal runs
        runs += 1
        raise RuntimeError("still broken")  # retryable: never acked

    @app.task(name="md.ok")
    async def ok() -> str:
        return "fine"

    env = TaskEnvelope(
        id="md-1",
        name="md.flaky",
        reply_to=resp_subject(app.client_id, "md-1"),
        retry_policy=UNLIMITED_FAST,
    )
    raw = encoder.encode(env)
    async with running(app, worker_id="w1"), running(app, worker_id="w2"):
        fut = app.future("md-1", name="md.flaky")
        await app.js.publish("TASKS.md.flaky", raw)
        with pytest.raises(TaskFailed) as info:
            await fut.result(20)
        assert info.value.error.kind == "max_deliveries"
        await wait_for(lambda: _no_tasks(app), 10)
        assert await (await ok.delay()).result(20) == "fine"
    assert runs == 3
    (entry,) = await dlq_entries(app, "md.flaky")
    assert entry.error.kind == "max_deliveries"
    assert entry.raw == raw
    assert entry.subject == "TASKS.md.flaky"
    assert entry.final_attempt == 3
    assert entry.task is not None and entry.task.id == "md-1"


async def test_an_invalid_message_out_of_deliveries_keeps_its_bytes(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message no worker ever settles (targeted at a worker without its handler, and the
    unknown-name window is longer than the limit) still ends as a record with its raw bytes.
    (Untargeted, it would just wait in its queue: no worker pulls a task it lacks.)"""
    import ebind.worker.runner as runner

    monkeypatch.setattr(advisory, "TASK_MAX_DELIVER", 2)
    monkeypatch.setattr(runner, "UNKNOWN_HANDLER_DELIVERIES", 10)
    monkeypatch.setattr(runner, "UNKNOWN_HANDLER_DELAY", 0.05)

    @app.task(name="md.known")
    async def known() -> str:
        return "alive"

    raw = msgspec.json.encode({"id": "md-2", "name": "md.nobody", "target": "md-w"})
    async with running(app, worker_id="md-w"):
        await app.js.publish(task_subject("md.nobody", "md-w"), raw)
        await wait_for(lambda: _dlq_count(app, "md.nobody"), 15)
        await wait_for(lambda: _no_tasks(app), 10)
        assert await (await known.delay()).result(20) == "alive"
    (entry,) = await dlq_entries(app, "md.nobody")
    assert (entry.error.kind, entry.raw, entry.final_attempt) == ("max_deliveries", raw, 2)


async def _no_tasks(app: App) -> bool:
    return await tasks_pending(app) == 0


async def _dlq_count(app: App, name: str) -> bool:
    return len(await dlq_entries(app, name)) >= 1


async def test_the_scheduler_durable_gets_the_finite_limit(app: App) -> None:
    from ebind.streams import DAG_EVENTS_STREAM, SCHEDULER_DURABLE
    from ebind.workflow.bus_nats import NatsBus

    await app.js.add_consumer(
        DAG_EVENTS_STREAM,
        config=ConsumerConfig(
            durable_name=SCHEDULER_DURABLE,
            ack_policy=AckPolicy.EXPLICIT,
            max_deliver=-1,
            filter_subject="DAG.>",
        ),
    )
    bus = await NatsBus.create(app.js)
    await bus.ensure_consumer("DAG.>")
    info = await app.js.consumer_info(DAG_EVENTS_STREAM, SCHEDULER_DURABLE)
    assert info.config.max_deliver == advisory.EVENT_MAX_DELIVER


async def test_an_exhausted_dag_event_becomes_a_dead_letter_and_leaves_the_stream(
    app: App,
) -> None:
    """The advisory path for EBIND_DAG_EVENTS, driven with the advisory the server sends;
    handling it twice (a second worker) keeps one entry."""
    from ebind.streams import DAG_EVENTS_STREAM, SCHEDULER_DURABLE
    from ebind.workflow.event_check import EVENTS_DLQ_NAME

    raw = b'{"kind":"completed","dag_id":"d1","step_id":"s1"}'
    ack = await app.js.publish("DAG.d1.completed.s1", raw)
    answered: list[str] = []

    async def answer(env: TaskEnvelope, error: Any) -> bool:
        answered.append(env.id)
        return True

    watcher = advisory.MaxDeliveriesWatcher(app, answer)
    advisory_body = msgspec.json.encode(
        {
            "type": "io.nats.jetstream.advisory.v1.max_deliver",
            "stream": DAG_EVENTS_STREAM,
            "consumer": SCHEDULER_DURABLE,
            "stream_seq": ack.seq,
            "deliveries": 1000,
        }
    )
    exhausted = advisory.parse_advisory(advisory_body)
    assert exhausted is not None
    await watcher.handle(exhausted)
    await watcher.handle(exhausted)
    (entry,) = await dlq_entries(app, EVENTS_DLQ_NAME)
    assert (entry.error.kind, entry.raw, entry.subject) == (
        "max_deliveries",
        raw,
        "DAG.d1.completed.s1",
    )
    assert entry.final_attempt == 1000
    assert answered == []
    info = await app.js.stream_info(DAG_EVENTS_STREAM)
    assert info.state.messages == 0


async def test_an_advisory_naming_a_schedule_leaves_it_alone(app: App) -> None:
    """Only messages an ebind durable delivers are settled by an advisory: one naming a
    periodic schedule's message (forged, or not the server's) neither deletes nor records it."""
    ack = await app.js.publish("TASKS_SCHEDULES.nightly", b'{"id":"nightly","name":"x"}')

    async def answer(env: TaskEnvelope, error: Any) -> bool:
        raise AssertionError("nobody may be answered")

    watcher = advisory.MaxDeliveriesWatcher(app, answer)
    await watcher.handle(advisory.Exhausted(TASKS_STREAM, WORKER_DURABLE, ack.seq, 1000))
    assert (await app.js.get_msg(TASKS_STREAM, ack.seq)).subject == "TASKS_SCHEDULES.nightly"
    assert (await app.js.stream_info(DLQ_STREAM)).state.messages == 0
