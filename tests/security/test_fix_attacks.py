"""Second-order defenses: keyed msg-ids do not confuse the workflow's presence check, a
requeue's duplicate check looks at the subject, the expirer never spins on work it cannot record,
and a NonRetryable task whose failure response is refused is not run again."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from datetime import UTC, datetime

import pytest

from ebind import App
from ebind.workflow import DAG, DAGStatus

KEY = b"K" * 32

# A backlog: one worker of concurrency 1, steps queued much longer than redispatch_after.
SHORT = {
    "sweep_interval": 0.25,
    "sweep_check_interval": 0.2,
    "dispatch_grace": 0.2,
    "redispatch_after": 0.8,
    "redispatch_cap": 30.0,
}


@pytest.mark.timeout(60)
async def test_signing_app_dag_steps_queued_behind_a_backlog_are_not_redispatched(
    nats_url: str,
) -> None:
    """A signing App's workflow does not re-send steps whose messages are still queued.

    The sweep asks NatsPresence whether the step's stored message carries
    ``msg_id(dag, step, generation)``; a signing App stores it under the keyed
    ``Signer.dedupe_id`` of that id, which the presence check compares against, so a
    queued step is not taken for replaced and re-sent as a new generation.
    """
    from ebind.workflow.workflow import Workflow

    app = App("rev", nats_url=nats_url, signing_keys=[KEY])
    runs: Counter[str] = Counter()

    @app.task(name="rev.slow")
    async def slow(tag: str) -> str:
        runs[tag] += 1
        await asyncio.sleep(0.4)
        return tag

    await app.connect()
    app._workflow = Workflow.from_app(app, **SHORT)
    w = app.worker(worker_id="backlog", concurrency=1, ack_wait=10.0, shutdown_grace=1.0)
    task = asyncio.create_task(w.run())
    try:
        dag = DAG(id="signed-backlog")
        for i in range(6):
            dag.step(f"s{i}", slow, f"s{i}")
        await dag.submit(app.workflow)
        async with asyncio.timeout(40):
            while not (await app.workflow.info(dag.id))[0].status.terminal:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        assert (await app.workflow.info(dag.id))[0].status is DAGStatus.DONE
        await asyncio.sleep(1.0)  # let any extra generation already queued run
        resent = app.workflow.scheduler.redispatches
        assert (resent, max(runs.values())) == (0, 1), (
            f"queued steps of a signing App were re-sent {resent} times (runs: {dict(runs)}): "
            "the presence check compares the plain msg-id with the keyed one stored"
        )
    finally:
        await w.stop()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        await app.workflow.close()
        await app.close()


async def test_requeue_swallowed_by_a_copy_on_another_subject_keeps_the_dead_letter(
    nats_url: str,
) -> None:
    """A copy of the dead task (same id, name and payload) stored under the requeue's
    msg-id on a subject no worker takes (``TASKS.rev.decoy``) is not taken for the
    requeued task: the requeue raises and the dead letter stays."""
    import nats

    from ebind.errors import PublishFailed
    from ebind.streams import TASKS_STREAM
    from ebind.wire import DLQEntry, TaskEnvelope, TaskError, encoder

    async with App("review", nats_url=nats_url) as app:
        env = TaskEnvelope(id="t-victim", name="rev.lost", enqueued_at=datetime.now(UTC))
        entry = DLQEntry(
            error=TaskError(kind="error", message="boom", retryable=False),
            final_attempt=1,
            dead_lettered_at=datetime.now(UTC),
            task=env,
        )
        seq = (await app.js.publish("DLQ.rev.lost", encoder.encode(entry))).seq
        nc = await nats.connect(nats_url)  # any producer
        try:
            await nc.jetstream().publish(
                "TASKS.rev.decoy",
                b'{"id":"t-victim","name":"rev.lost"}',
                headers={"Nats-Msg-Id": f"t-victim:requeue:{seq}"},
            )
        finally:
            await nc.close()
        try:
            await app.dlq.requeue(seq)
            raised = None
        except PublishFailed as exc:
            raised = exc
        queued = await app.js.stream_info(TASKS_STREAM, subjects_filter="TASKS.rev.lost")
        on_lost = sum((queued.state.subjects or {}).values())
        left = await app.dlq.count()
        assert raised is not None and left == 1, (
            f"requeue reported success (queued on TASKS.rev.lost: {on_lost}) and the dead "
            f"letter count is {left}: the server kept the decoy on TASKS.rev.decoy"
        )


@pytest.mark.timeout(30)
async def test_an_expirer_that_records_nothing_does_not_pass_again_at_once(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages a worker holds (delivered, unacked) get half the grace margin more before
    the expirer records them; they do not count towards the per-pass cap, and a pass that
    records nothing waits its interval instead of starting the next one at once.
    Scaled: a cap of 25, 30 held tasks, a 1 s horizon (1 s allowance), ``interval=0.5``.
    """
    import time

    from nats.js.api import ConsumerConfig

    import ebind.expirer as expirer_mod
    from ebind import Retention
    from ebind.expirer import Expirer
    from ebind.streams import TASKS_STREAM

    monkeypatch.setattr(expirer_mod, "MAX_PER_PASS", 25)
    app = App("exp-held", nats_url=nats_url, retention=Retention(tasks=1))

    @app.task(name="held.slow")
    async def slow(i: int) -> int:
        return i

    async with app:
        await slow.map(range(30))
        t0 = time.monotonic()
        # A worker holding 30 deliveries (running them, or waiting to retry them).
        sub = await app.js.pull_subscribe(
            "TASKS.held.slow",
            durable="holder",
            stream=TASKS_STREAM,
            config=ConsumerConfig(max_ack_pending=100, ack_wait=60),
        )
        held = await sub.fetch(30, timeout=5)
        assert len(held) == 30
        await asyncio.sleep(max(0.0, 1.1 - (time.monotonic() - t0)))  # past the horizon

        passes = 0

        class Counting(Expirer):
            async def sweep(self) -> int:
                nonlocal passes
                passes += 1
                return await super().sweep()

        expirer = Counting(app, interval=0.5)
        runner = asyncio.create_task(expirer.run())
        await asyncio.sleep(0.7)  # inside the 1 s allowance of a held message
        await expirer.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(runner, 10)
    assert passes <= 3, (
        f"{passes} passes in 0.7 s with interval=0.5: passes that recorded nothing "
        "(every expired message is held by a worker) started the next one at once"
    )


@pytest.mark.timeout(40)
async def test_a_nonretryable_failure_whose_response_is_refused_is_not_run_again(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure response the results stream keeps refusing is retried for RESPOND_PATIENCE;
    after that the message is terminated (the dead letter records the failure), never
    redelivered: a redelivery would run a NonRetryable handler again, side effects
    included. Scaled: RESPOND_PATIENCE 0.5 s, EBIND_RESP full (discard new).
    """
    from nats.js import api
    from worker_helpers import running

    import ebind.worker.runner as runner_mod
    from ebind import RetryPolicy
    from ebind.errors import NonRetryable
    from ebind.streams import RESP_STREAM

    monkeypatch.setattr(runner_mod, "RESPOND_PATIENCE", 0.5)
    runs: list[int] = []
    app = App("rf", nats_url=nats_url)

    @app.task(name="rf.charge", retry=RetryPolicy(maximum_attempts=3))
    async def charge() -> int:
        runs.append(1)  # e.g. a card charged, then a NonRetryable raised for a later step
        raise NonRetryable("declined after side effect")

    async with app:
        info = await app.js.stream_info(RESP_STREAM)
        await app.js.update_stream(info.config.evolve(max_msgs=1, discard=api.DiscardPolicy.NEW))
        await app.js.publish("RESP.someone.else", b"{}")  # the bound is reached
        await charge.delay()
        async with running(app):
            await asyncio.sleep(4.0)
    assert len(runs) == 1, (
        f"a NonRetryable task ran {len(runs)} times: each refused failure response naks the "
        "message and the redelivery runs the handler again"
    )
