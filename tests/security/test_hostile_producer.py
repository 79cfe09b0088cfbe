"""A producer who may only publish on TASKS.> / DAG.> tries to take over the engine.

Each test publishes raw hostile bytes with a plain nats-py client against a real worker and
checks: the message is dead-lettered (kind, raw bytes, subject, first delivery), what it
aimed at is untouched, and a normal task still completes afterwards.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from worker_helpers import dlq_entries, running, tasks_pending, wait_for

from ebind.app import App
from ebind.errors import InvalidName, TaskTimeout
from ebind.streams import KV_DAGS, KV_LEASES, RESP_STREAM, resp_subject
from ebind.wire import DLQEntry, TaskEnvelope, TaskResponse, encoder
from ebind.workflow.event_check import EVENTS_DLQ_NAME

pytestmark = pytest.mark.timeout(60)


def _register(app: App) -> Any:
    @app.task(name="sec.echo")
    async def echo(value: str = "ok") -> str:
        return value

    return echo


async def _dead_letter(app: App, name: str, raw: bytes) -> DLQEntry:
    """The one DLQ entry for ``name`` once it exists; it must hold ``raw``."""

    async def stored() -> bool:
        return bool(await dlq_entries(app, name))

    await wait_for(stored, 15)
    (entry,) = await dlq_entries(app, name)
    assert entry.raw == raw
    assert entry.task is None
    return entry


async def _still_serves(app: App, echo: Any) -> None:
    assert await (await echo.delay("after")).result(20) == "after"

    async def drained() -> bool:
        return await tasks_pending(app) == 0

    await wait_for(drained, 10)


async def _events_drained(app: App) -> None:
    """Wait until the scheduler has settled every DAG event (none left in the stream)."""

    async def drained() -> bool:
        info = await app.js.stream_info("EBIND_DAG_EVENTS")
        return info.state.messages == 0

    await wait_for(drained, 10)


def _envelope(**fields: Any) -> bytes:
    base: dict[str, Any] = {"id": "evil-1", "name": "sec.echo", "payload": ["pwned"]}
    base.update(fields)
    return msgspec.json.encode(base)


@pytest.mark.parametrize(
    ("bucket", "key"), [(KV_LEASES, "scheduler"), (KV_DAGS, "nightly.meta")], ids=["lease", "dag"]
)
async def test_reply_to_naming_a_kv_record_does_not_overwrite_it(
    app: App, attacker: Any, bucket: str, key: str
) -> None:
    echo = _register(app)
    kv = await app.js.key_value(bucket)
    rev = await kv.put(key, b"the real record")
    raw = _envelope(reply_to=f"$KV.{bucket}.{key}")
    async with running(app):
        await attacker.publish("TASKS.sec.echo", raw)
        entry = await _dead_letter(app, "sec.echo", raw)
        await _still_serves(app, echo)
    assert (entry.error.kind, entry.final_attempt, entry.subject) == (
        "invalid",
        1,
        "TASKS.sec.echo",
    )
    assert "reply_to" in entry.error.message
    got = await kv.get(key)
    assert (got.value, got.revision) == (b"the real record", rev)


async def test_reply_to_another_clients_result_is_not_forged(
    app: App, attacker: Any, nats_url: str
) -> None:
    echo = _register(app)
    victim = App("other", nats_url=nats_url)
    await victim.connect()
    try:
        waiting = victim.future("victim-task")
        raw = _envelope(reply_to=resp_subject(victim.client_id, "victim-task"))
        async with running(app):
            await attacker.publish("TASKS.sec.echo", raw)
            entry = await _dead_letter(app, "sec.echo", raw)
            await _still_serves(app, echo)
        assert entry.error.kind == "invalid"
        with pytest.raises(TaskTimeout):
            await waiting.result(0.5)
        info = await app.js.stream_info(
            RESP_STREAM, subjects_filter=resp_subject(victim.client_id, ">")
        )
        assert not info.state.subjects  # nothing was stored on the victim's subjects
    finally:
        await victim.close()


@pytest.mark.parametrize(
    ("subject", "raw", "dlq_name", "needle"),
    [
        (
            "TASKS.sec.echo",
            b'{"id":"deep","name":"sec.echo","payload":' + b"[" * 2000 + b"]" * 2000 + b"}",
            "sec.echo",
            "deeper than",
        ),
        (
            "TASKS.sec.echo",
            _envelope(deadline="2099-01-01T00:00:00"),
            "sec.echo",
            "time zone",
        ),
        ("TASKS.sec.echo", _envelope(name="sec echo"), "sec.echo", "task name"),
        ("TASKS.sec.echo", _envelope(queue="billing"), "sec.echo", "TASKQ.billing.normal"),
        ("TASKS.sec.echo", _envelope(queue="a.b"), "sec.echo", "invalid queue"),
        ("TASKS.sec.echo", _envelope(priority="urgent"), "sec.echo", "priority must be"),
        (
            "TASKS.sec.echo",
            _envelope(id="d.1:s1", dag_id="d.1", step_id="s1"),
            "sec.echo",
            "dag_id",
        ),
    ],
    ids=[
        "nested-2000-deep",
        "naive-deadline",
        "name-with-space",
        "queue-not-its-subject",
        "queue-with-dot",
        "unknown-band",
        "dag-id-with-dot",
    ],
)
async def test_malformed_envelopes_are_dead_lettered_on_their_first_delivery(
    app: App, attacker: Any, subject: str, raw: bytes, dlq_name: str, needle: str
) -> None:
    echo = _register(app)
    async with running(app):
        await attacker.publish(subject, raw)
        entry = await _dead_letter(app, dlq_name, raw)
        await _still_serves(app, echo)
    assert (entry.error.kind, entry.final_attempt, entry.subject) == ("invalid", 1, subject)
    assert needle in entry.error.message


async def test_a_message_cannot_run_another_task_than_its_subject_names(
    app: App, attacker: Any
) -> None:
    """Subject permissions mean something only if a message on TASKS.sec.echo cannot run
    sec.admin: the name in the body must be the one in the subject."""
    echo = _register(app)
    ran: list[str] = []

    @app.task(name="sec.admin")
    async def admin(value: str = "") -> str:
        ran.append(value)
        return value

    raw = _envelope(name="sec.admin")
    async with running(app):
        await attacker.publish("TASKS.sec.echo", raw)
        entry = await _dead_letter(app, "sec.echo", raw)
        await _still_serves(app, echo)
    assert (entry.error.kind, entry.final_attempt) == ("invalid", 1)
    assert "'TASKS.sec.admin'" in entry.error.message
    assert ran == []


async def test_a_response_for_another_task_id_is_ignored(app: App) -> None:
    """Whatever lands on a waiter's subject must carry the awaited id to resolve it."""
    echo = _register(app)
    fut = app.future("awaited")
    forged = TaskResponse(task_id="other", result=msgspec.Raw(b'"forged"'))
    await app.js.publish(resp_subject(app.client_id, "awaited"), encoder.encode(forged))
    with pytest.raises(TaskTimeout):
        await fut.result(0.5)
    real = TaskResponse(task_id="awaited", result=msgspec.Raw(b'"real"'))
    await app.js.publish(resp_subject(app.client_id, "awaited"), encoder.encode(real))
    assert await fut.result(5) == "real"
    async with running(app):
        await _still_serves(app, echo)


async def test_future_with_wildcards_cannot_read_another_apps_result(
    app: App, nats_url: str
) -> None:
    echo = _register(app)
    async with running(app):
        fut = await echo.delay("secret")
        assert await fut.result(20) == "secret"
    snoop = App("snoop", nats_url=nats_url)
    await snoop.connect()
    try:
        for task_id, client_id in (("*", "*"), (">", None), (fut.id, "*"), (fut.id, ">")):
            with pytest.raises(InvalidName):
                snoop.future(task_id, client_id=client_id)
    finally:
        await snoop.close()


@pytest.mark.parametrize(
    ("subject", "raw"),
    [
        ("DAG.d1.completed.s1", b"\xff\x00 not json"),
        (
            "DAG.d1.completed.s1",
            b'{"kind":"completed","dag_id":"d1","bp_labels":' + b"[" * 3000 + b"]" * 3000 + b"}",
        ),
        ("DAG.d1.completed.s1", b'{"kind":"completed","dag_id":"d.1","step_id":"s1"}'),
    ],
    ids=["undecodable", "nested-3000-deep", "dag-id-with-dot"],
)
async def test_hostile_scheduler_events_are_dead_lettered(
    app: App, attacker: Any, subject: str, raw: bytes
) -> None:
    echo = _register(app)
    app.configure_workflow(sweep_check_interval=0.2, sweep_interval=0.5)
    async with running(app, scheduler=True):
        await attacker.publish(subject, raw)
        entry = await _dead_letter(app, EVENTS_DLQ_NAME, raw)
        await _still_serves(app, echo)
        await _events_drained(app)
    assert (entry.error.kind, entry.subject) == ("invalid", subject)


class _RecordingHook:
    """A StepHook that only records what the worker asked of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def on_step_started(self, env: TaskEnvelope) -> bool:
        self.calls.append(("started", env.id))
        return True

    async def on_step_done(self, env: TaskEnvelope, result: bytes) -> None:
        self.calls.append(("done", env.id))

    async def on_step_failed(self, env: TaskEnvelope, error: Any) -> None:
        self.calls.append(("failed", env.id))


async def test_an_invalid_step_message_never_reaches_the_step_hook(app: App, attacker: Any) -> None:
    """Well-formed DAG and step ids, one bad field (a reply subject into the DAG bucket):
    the step hook is never called, so no step record is touched."""
    echo = _register(app)
    hook = _RecordingHook()
    raw = _envelope(id="d1:s1", dag_id="d1", step_id="s1", reply_to=f"$KV.{KV_DAGS}.d1.meta")
    async with running(app, hook=hook):
        await attacker.publish("TASKS.sec.echo", raw)
        entry = await _dead_letter(app, "sec.echo", raw)
        await _still_serves(app, echo)
    assert (entry.error.kind, entry.final_attempt) == ("invalid", 1)
    assert hook.calls == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Status": "409", "Description": "Consumer Deleted"},
        {"Status": "409", "Description": "Leadership Change"},
        {"Status": "503"},
        {"Status": "408", "Description": "Request Timeout"},
    ],
    ids=["consumer-deleted", "leadership", "no-responders", "request-timeout"],
)
async def test_an_empty_task_message_with_a_status_header_is_dead_lettered(
    app: App, attacker: Any, headers: dict[str, str]
) -> None:
    # The server's status replies to a pull request are empty and carry a Status header;
    # a stored message can look the same, but only the server's deliveries have an ack
    # subject. Taken for a status it was never settled, and came back until max_deliver.
    echo = _register(app)
    async with running(app):
        await attacker.publish("TASKS.sec.echo", b"", headers=headers)
        entry = await _dead_letter(app, "sec.echo", b"")
        await _still_serves(app, echo)
    assert (entry.error.kind, entry.final_attempt, entry.subject) == (
        "decode",
        1,
        "TASKS.sec.echo",
    )


async def test_an_empty_event_with_a_status_header_is_dead_lettered(
    app: App, attacker: Any
) -> None:
    # Taken for the server's "consumer deleted" it was never settled, and every delivery
    # had the scheduler re-create its durable.
    echo = _register(app)
    app.configure_workflow(sweep_check_interval=0.2, sweep_interval=0.5)
    subject = "DAG.d1.completed.s1"
    async with running(app, scheduler=True):
        await attacker.publish(
            subject, b"", headers={"Status": "409", "Description": "Consumer Deleted"}
        )
        entry = await _dead_letter(app, EVENTS_DLQ_NAME, b"")
        await _still_serves(app, echo)
        await _events_drained(app)
    assert (entry.error.kind, entry.subject) == ("invalid", subject)
