"""Signed task messages on a real server and a real worker: every publish path, rejections."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from trust_helpers import OpenApp, raw_messages
from trust_tasks import FLAKY_FAILS, TICKS, concat
from worker_helpers import dlq_entries, running, tasks_pending, wait_for

from ebind.app import App
from ebind.errors import TaskFailed, TaskTimeout
from ebind.signing import HEADER_SIGNATURE, Signer
from ebind.streams import RESP_STREAM, TASKS_STREAM
from ebind.wire import DLQEntry, ErrorKind, TaskEnvelope, encoder
from ebind.workflow import DAG

NEW = b"N" * 32
OLD = b"O" * 32
OTHER = b"X" * 32


async def _dead(app: App, name: str, count: int = 1) -> list[DLQEntry]:
    async def enough() -> bool:
        return len(await dlq_entries(app, name)) >= count

    await wait_for(enough, 15)
    return await dlq_entries(app, name)


async def test_signed_plain_countdown_and_periodic_tasks_run(open_app: OpenApp) -> None:
    app = await open_app(signing_keys=[NEW])
    TICKS.clear()
    await app.schedule("signed-tick", "trust.tick", ["periodic"], every=1)
    stored = await raw_messages(app, TASKS_STREAM)
    assert any(HEADER_SIGNATURE.encode() in m for m in stored)
    async with running(app):
        plain = await app.enqueue("trust.echo", "plain")
        later = await app.apply_async("trust.echo", ["countdown"], countdown=0.3)
        assert await plain.result(10) == "plain!"
        assert await later.result(10) == "countdown!"
        await wait_for(lambda: "periodic" in TICKS, 10)
    assert await app.unschedule("signed-tick")
    assert await dlq_entries(app, "trust.echo") == []
    assert await dlq_entries(app, "trust.tick") == []


async def test_rate_limited_tasks_deferred_as_copies_are_signed_and_sealed(
    open_app: OpenApp,
) -> None:
    from ebind.contrib.fernet import FernetCodec, generate_key

    app = await open_app(signing_keys=[NEW], payload_codec=FernetCodec([generate_key()]))
    # Concurrency 2: one task held for its token, the others wait as delayed copies.
    async with running(app, concurrency=2) as worker:
        futs = [await app.enqueue("trust.limited", "acme", n) for n in range(4)]
        assert [await f.result(15) for f in futs] == [f"acme-{n}" for n in range(4)]
        admission = worker._runner.admission
        assert admission is not None and admission.deferred > 0
    assert await dlq_entries(app, "trust.limited") == []


async def test_signed_dag_steps_run(open_app: OpenApp) -> None:
    app = await open_app(signing_keys=[NEW])
    async with running(app, scheduler=True):
        dag = DAG(id="signed-dag")
        a = dag.step("a", concat, "x", "y")
        b = dag.step("b", concat, a.ref(), "z")
        await dag.submit(app.workflow)
        assert await app.workflow.result(dag.id, b, timeout=20) == "x+y+z"
    assert await dlq_entries(app, "trust.concat") == []


async def test_unsigned_message_is_dead_lettered_raw_with_no_response(open_app: OpenApp) -> None:
    worker_app = await open_app(signing_keys=[NEW])
    producer = await open_app()
    async with running(worker_app):
        fut = await producer.enqueue("trust.echo", "forged")
        (entry,) = await _dead(worker_app, "trust.echo")
        assert entry.error.kind == ErrorKind.UNSIGNED.value
        assert "no Ebind-Signature" in entry.error.message
        assert entry.task is None
        assert entry.subject == "TASKS.trust.echo"
        assert b'"forged"' in entry.raw and fut.id.encode() in entry.raw
        with pytest.raises(TaskTimeout):
            await fut.result(timeout=1.0)
        assert await raw_messages(worker_app, RESP_STREAM) == []
        assert await tasks_pending(worker_app) == 0
        # The worker stays healthy: a signed task right after runs.
        assert await (await worker_app.enqueue("trust.echo", "after")).result(10) == "after!"


@pytest.mark.parametrize(
    ("producer_keys", "accepted"),
    [([OLD], True), ([NEW, OLD], True), ([OTHER], False), ([OTHER, NEW], False)],
    ids=["old-key", "new-key", "other-key", "other-key-first"],
)
async def test_rotation_worker_new_and_old(
    open_app: OpenApp, producer_keys: list[bytes], accepted: bool
) -> None:
    worker_app = await open_app(signing_keys=[NEW, OLD])
    producer = await open_app(signing_keys=producer_keys)
    async with running(worker_app):
        fut = await producer.enqueue("trust.echo", "rot")
        if accepted:
            assert await fut.result(10) == "rot!"
            return
        (entry,) = await _dead(worker_app, "trust.echo")
        assert entry.error.kind == ErrorKind.BAD_SIGNATURE.value
        assert b'"rot"' in entry.raw and entry.task is None
        with pytest.raises(TaskTimeout):
            await fut.result(timeout=0.5)


async def test_a_body_changed_after_signing_is_bad_signature(open_app: OpenApp) -> None:
    worker_app = await open_app(signing_keys=[NEW])
    signed = TaskEnvelope(id="t-orig", name="trust.echo", payload=b'["small"]')  # type: ignore[arg-type]
    forged = TaskEnvelope(id="t-forged", name="trust.echo", payload=b'["huge"]')  # type: ignore[arg-type]
    header = Signer([NEW]).sign("TASKS.trust.echo", encoder.encode(signed))
    async with running(worker_app):
        await worker_app.js.publish(
            "TASKS.trust.echo", encoder.encode(forged), headers={HEADER_SIGNATURE: header}
        )
        (entry,) = await _dead(worker_app, "trust.echo")
        assert entry.error.kind == ErrorKind.BAD_SIGNATURE.value
        assert "does not match" in entry.error.message
        assert entry.raw == encoder.encode(forged)


async def test_dlq_requeue_is_signed_again(open_app: OpenApp) -> None:
    app = await open_app(signing_keys=[NEW])
    FLAKY_FAILS.add("rq")
    try:
        async with running(app):
            fut = await app.enqueue("trust.flaky", "rq")
            with pytest.raises(TaskFailed, match="set to fail"):
                await fut.result(10)
            letters = [d for d in await app.dlq.list() if d.task and d.task.name == "trust.flaky"]
            FLAKY_FAILS.discard("rq")
            task_id = await app.dlq.requeue(letters[0].seq)

            async def answered() -> Any:
                resp = await app._router.fetch(task_id) if app._router else None
                return resp is not None and resp.error is None

            await wait_for(answered, 10)
    finally:
        FLAKY_FAILS.discard("rq")
    kinds = {e.error.kind for e in await dlq_entries(app, "trust.flaky")}
    assert ErrorKind.UNSIGNED.value not in kinds and ErrorKind.BAD_SIGNATURE.value not in kinds


async def test_cli_requeue_signs_with_keys_from_the_environment(
    open_app: OpenApp, nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from ebind.cli import main
    from ebind.signing import ENV_SIGNING_KEYS

    app = await open_app(signing_keys=[NEW])
    FLAKY_FAILS.add("cli")
    try:
        async with running(app):
            fut = await app.enqueue("trust.flaky", "cli")
            with pytest.raises(TaskFailed):
                await fut.result(10)
            (letter,) = [d for d in await app.dlq.list() if d.task and d.task.name == "trust.flaky"]
            FLAKY_FAILS.discard("cli")
            monkeypatch.setenv(ENV_SIGNING_KEYS, NEW.decode())
            # CliRunner commands run their own event loop: give them a thread.
            result = await asyncio.to_thread(
                CliRunner().invoke,
                main,
                ["--nats", nats_url, "dlq", "requeue", str(letter.seq), "--yes"],
            )
            assert result.exit_code == 0, result.output

            async def answered() -> Any:
                resp = await app._router.fetch(fut.id) if app._router else None
                return resp is not None and resp.error is None

            await wait_for(answered, 10)
    finally:
        FLAKY_FAILS.discard("cli")
    assert await dlq_entries(app, "trust.flaky") == []
