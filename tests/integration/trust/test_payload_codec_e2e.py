"""Payload encryption at rest on a real server and worker: nothing readable is stored."""

from __future__ import annotations

import pytest
from trust_helpers import OpenApp, raw_messages
from trust_tasks import TICKS, concat, echo, leak
from worker_helpers import dlq_entries, running, wait_for

from ebind.contrib.fernet import FernetCodec, generate_key
from ebind.errors import StepFailed, TaskFailed
from ebind.streams import DAG_EVENTS_STREAM, DLQ_STREAM, KV_DAGS, RESP_STREAM, TASKS_STREAM
from ebind.wire import ErrorKind
from ebind.workflow import DAG, signal_ref

KEY = generate_key()
MARK = "zebra-7731"
SECRET = "hunter2-s3cr3t"
KV_STREAM = f"KV_{KV_DAGS}"


async def test_marker_in_arguments_and_results_is_never_stored_in_plaintext(
    open_app: OpenApp,
) -> None:
    app = await open_app(payload_codec=FernetCodec([KEY]), signing_keys=[b"k" * 32])
    # Queued while no worker runs, so EBIND_TASKS holds every kind of task message now.
    plain = await app.enqueue("trust.echo", MARK + "-arg")
    later = await app.apply_async("trust.echo", [MARK + "-later"], countdown=0.3)
    doomed = await app.enqueue("trust.reject", MARK + "-dlq")
    TICKS.clear()
    await app.schedule("sealed-tick", "trust.tick", [MARK + "-tick"], every=1)
    dag = DAG(id="sealed-dag")
    a = dag.step("a", echo, MARK + "-dag")
    b = dag.step("b", concat, a.ref(), MARK + "-lit")
    gated = dag.step("gated", echo, signal_ref("approve"))
    await dag.submit(app.workflow)
    queued = await raw_messages(app, TASKS_STREAM)
    assert len(queued) >= 5
    assert not [m for m in queued if MARK.encode() in m]

    async with running(app, scheduler=True):
        assert await plain.result(10) == MARK + "-arg!"
        assert await later.result(10) == MARK + "-later!"
        with pytest.raises(TaskFailed, match="rejected"):
            await doomed.result(10)
        assert await app.workflow.result(dag.id, b, timeout=20) == f"{MARK}-dag!+{MARK}-lit"
        assert await app.workflow.result(dag.id, a, timeout=5) == MARK + "-dag!"
        assert await app.workflow.signal(dag.id, "approve", MARK + "-sig")
        assert await app.workflow.result(dag.id, gated, timeout=20) == MARK + "-sig!"
        await wait_for(lambda: MARK + "-tick" in TICKS, 10)

    assert await app.unschedule("sealed-tick")
    stored = {
        stream: await raw_messages(app, stream)
        for stream in (TASKS_STREAM, RESP_STREAM, DLQ_STREAM, KV_STREAM, DAG_EVENTS_STREAM)
    }
    assert len(stored[RESP_STREAM]) >= 3
    assert len(stored[DLQ_STREAM]) == 1
    assert len(stored[KV_STREAM]) >= 5  # meta, steps and results of the DAG
    for stream, messages in stored.items():
        leaked = [m[:200] for m in messages if MARK.encode() in m]
        assert not leaked, f"{stream} holds plaintext: {leaked}"
    # What is stored is the codec's tokens (Fernet tokens start with gAAAAA).
    assert any(b'"gAAAAA' in m for m in stored[RESP_STREAM])
    assert any(b'"gAAAAA' in m for m in stored[DLQ_STREAM])
    assert any(b'"gAAAAA' in m for m in stored[KV_STREAM])


async def test_producer_without_the_codec_gets_a_clear_error(open_app: OpenApp) -> None:
    worker_app = await open_app(payload_codec=FernetCodec([KEY]))
    producer = await open_app()
    async with running(worker_app):
        fut = await producer.enqueue("trust.echo", "plain")
        with pytest.raises(TaskFailed) as info:
            await fut.result(10)
    err = info.value.error
    assert err.kind == ErrorKind.DECODE.value
    assert "arguments of task 'trust.echo' arrived in plaintext" in err.message
    assert "payload_codec" in err.message


async def test_worker_without_the_codec_gets_a_clear_error(open_app: OpenApp) -> None:
    worker_app = await open_app()
    producer = await open_app(payload_codec=FernetCodec([KEY]))
    async with running(worker_app):
        fut = await producer.enqueue("trust.echo", "sealed")
        with pytest.raises(TaskFailed) as info:
            await fut.result(10)
    assert "sealed with a payload codec, but this App has none" in info.value.error.message


async def test_worker_with_another_key_gets_a_clear_error(open_app: OpenApp) -> None:
    worker_app = await open_app(payload_codec=FernetCodec([generate_key()]))
    producer = await open_app(payload_codec=FernetCodec([KEY]))
    async with running(worker_app):
        fut = await producer.enqueue("trust.echo", "sealed")
        with pytest.raises(TaskFailed, match=r"could not be opened .* another key"):
            await fut.result(10)


async def test_codec_key_rotation_worker_new_and_old(open_app: OpenApp) -> None:
    new = generate_key()
    worker_app = await open_app(payload_codec=FernetCodec([new, KEY]))
    producer = await open_app(payload_codec=FernetCodec([KEY]))
    async with running(worker_app):
        # The result comes back sealed with the worker's new key: the producer needs it too.
        fut = await producer.enqueue("trust.echo", "rotated")
        with pytest.raises(TaskFailed, match="result of task"):
            await fut.result(10)
    rotated = await open_app(payload_codec=FernetCodec([KEY, new]))
    async with running(worker_app):
        assert await (await rotated.enqueue("trust.echo", "both")).result(10) == "both!"


async def test_redact_error_applies_to_responses_dead_letters_and_step_records(
    open_app: OpenApp,
) -> None:
    app = await open_app(redact_error=lambda text: text.replace(SECRET, "***"))
    async with running(app, scheduler=True):
        fut = await app.enqueue("trust.leak", SECRET)
        with pytest.raises(TaskFailed) as info:
            await fut.result(10)
        assert SECRET not in info.value.error.message
        assert "login refused for token ***" in info.value.error.message
        dag = DAG(id="redacted-dag")
        step = dag.step("s", leak, SECRET)
        await dag.submit(app.workflow)
        with pytest.raises(StepFailed):
            await app.workflow.result(dag.id, step, timeout=20)

        async def two_letters() -> bool:
            return len(await dlq_entries(app, "trust.leak")) >= 2

        await wait_for(two_letters, 10)
    _, records = await app.workflow.info("redacted-dag")
    assert [r.error_message for r in records] == ["login refused for token ***"]
    for entry in await dlq_entries(app, "trust.leak"):
        assert entry.error.message == "login refused for token ***"
