"""A purge of EBIND_TASKS leaves a record of every task it removes.

``ebind stream purge EBIND_TASKS`` (``purge_tasks``) dead-letters each queued (and, when
asked, delayed) task as ``purged`` with its raw bytes, answers its waiter only when a worker
would have accepted the message, deletes it, and keeps what a worker holds.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import nats
import pytest
from worker_helpers import running, wait_for

from ebind import App
from ebind.cli.tasks_purge import purge_record, purge_tasks
from ebind.dlq import publish_dead_letter
from ebind.errors import TaskFailed, TaskTimeout
from ebind.streams import RESP_STREAM, TASKS_STREAM
from ebind.wire import encoder

pytestmark = pytest.mark.timeout(90)

KEY = "purge-signing-key-0123456789abcdef"


async def _stored(app: App, stream: str, subject_filter: str) -> int:
    info = await app.js.stream_info(stream, subjects_filter=subject_filter)
    return sum((info.state.subjects or {}).values())


async def test_purged_queued_task_leaves_a_record_for_its_waiter(nats_url: str) -> None:
    """A queued task removed by ``purge_tasks`` is not lost without a trace: its waiter
    gets ``TaskFailed`` (not a ``TaskTimeout``, nor an endless wait) and ``ebind dlq ls``
    shows a dead letter for it."""
    app = App("review", nats_url=nats_url)
    async with app:
        fut = await app.enqueue("rev.unserved", 1)
        report = await purge_tasks(app, delayed=False, schedules=False)
        assert report.removed["queued tasks"] == 1
        outcome: object
        try:
            await fut.result(timeout=3)
            outcome = "a result"
        except TaskFailed as exc:
            outcome = exc
        except TaskTimeout as exc:
            outcome = exc
        letters = await app.dlq.count()
        assert isinstance(outcome, TaskFailed) or letters == 1, (
            f"purged task {fut.id}: waiter got {outcome!r}, dead letters: {letters}"
        )


async def test_a_purged_task_is_answered_as_purged_and_dead_lettered_with_its_bytes(
    nats_url: str,
) -> None:
    """The waiter's error is the non-retryable kind ``purged``; the one dead letter keeps
    the message's raw bytes, its decoded task and the subject it waited on."""
    async with App("purge", nats_url=nats_url) as app:
        fut = await app.enqueue("pr.unserved", 1)
        stored = await app.js.get_msg(TASKS_STREAM, seq=1, subject="TASKS.>", next=True)
        report = await purge_tasks(app, delayed=False, schedules=False)
        assert report.removed == {"queued tasks": 1} and report.dead_lettered == 1
        with pytest.raises(TaskFailed) as caught:
            await fut.result(timeout=5)
        assert caught.value.kind == "purged" and not caught.value.error.retryable
        [letter] = await app.dlq.list()
        assert letter.subject == "DLQ.pr.unserved"
        assert letter.entry.error.kind == "purged"
        assert letter.entry.raw == bytes(stored.data)
        assert letter.entry.subject == "TASKS.pr.unserved"
        assert letter.entry.task is not None and letter.entry.task.id == fut.id
        assert await _stored(app, TASKS_STREAM, "TASKS.>") == 0


async def test_an_unsigned_message_purged_by_a_signing_app_is_kept_raw_and_not_answered(
    nats_url: str,
) -> None:
    """A message a signing worker would refuse (no signature) is dead-lettered as raw bytes
    only: nothing it says, its reply subject included, is used."""
    async with App("purge", nats_url=nats_url, signing_keys=[KEY]) as app:
        reply_to = f"RESP.{app.client_id}.forged-1"
        forged = encoder.encode(
            {"id": "forged-1", "name": "pr.victim", "reply_to": reply_to, "payload": [1]}
        )
        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().publish("TASKS.pr.victim", forged)
        finally:
            await nc.close()
        report = await purge_tasks(app, delayed=False, schedules=False)
        assert report.removed == {"queued tasks": 1} and report.dead_lettered == 1
        [letter] = await app.dlq.list()
        assert letter.entry.task is None and letter.entry.raw == forged
        assert letter.entry.error.kind == "purged"
        assert "kept as raw bytes only (unsigned)" in letter.entry.error.message
        assert await _stored(app, RESP_STREAM, reply_to) == 0


async def test_a_delayed_task_purged_with_delayed_is_recorded_under_its_target(
    nats_url: str,
) -> None:
    """A countdown task not yet due is checked as it would arrive (on its schedule target,
    whose subject its signature covers), so a signed one is decoded and answered."""
    async with App("purge", nats_url=nats_url, signing_keys=[KEY]) as app:
        fut = await app.apply_async("pr.later", (1,), countdown=600)
        kept = await purge_tasks(app, delayed=False, schedules=False)
        assert kept.kept["delayed tasks"] == 1 and kept.dead_lettered == 0
        report = await purge_tasks(app, delayed=True, schedules=False)
        assert report.removed == {"queued tasks": 0, "delayed tasks": 1}
        with pytest.raises(TaskFailed) as caught:
            await fut.result(timeout=5)
        assert caught.value.kind == "purged"
        [letter] = await app.dlq.list()
        assert letter.entry.task is not None and letter.entry.task.id == fut.id
        assert letter.entry.subject == "TASKS.pr.later"
        assert await _stored(app, TASKS_STREAM, "TASKS_SCHEDULED.>") == 0


async def test_a_task_a_worker_holds_is_kept_as_running(nats_url: str) -> None:
    """A delivered, unacked message is running: the purge leaves it to its worker, which
    answers it, and reports it kept."""
    started, release = asyncio.Event(), asyncio.Event()
    async with App("purge", nats_url=nats_url) as app:

        @app.task(name="pr.slow")
        async def slow(x: int) -> int:
            started.set()
            await release.wait()
            return x

        async with running(app):
            fut = await slow.delay(7)
            await wait_for(started.is_set, 10)
            report = await purge_tasks(app, delayed=False, schedules=False)
            release.set()
            assert await fut.result(timeout=10) == 7
        assert report.removed == {"queued tasks": 0} and report.dead_lettered == 0
        assert report.kept["running tasks"] == 1
        assert await app.dlq.count() == 0


async def test_tasks_queued_after_the_bound_stay(nats_url: str) -> None:
    """Only messages up to the sequence read at the start are purged."""
    async with App("purge", nats_url=nats_url) as app:
        await app.enqueue("pr.unserved", 1)
        last = int((await app.js.stream_info(TASKS_STREAM)).state.last_seq)
        late = await app.enqueue("pr.unserved", 2)
        seen: list[int] = []
        report = await purge_tasks(
            app, delayed=False, schedules=False, up_to=last, on_each=seen.append
        )
        assert report.removed == {"queued tasks": 1} and seen == [1]
        left = await app.js.get_msg(TASKS_STREAM, seq=1, subject="TASKS.>", next=True)
        assert late.id.encode() in bytes(left.data)


async def test_a_purge_tried_again_stores_no_second_record(nats_url: str) -> None:
    """A purge that died after its dead letter and answer but before its delete is run
    again: the message goes, with still one dead letter and one answer."""
    async with App("purge", nats_url=nats_url) as app:
        fut = await app.enqueue("pr.unserved", 1)
        raw: Any = await app.js.get_msg(TASKS_STREAM, seq=1, subject="TASKS.>", next=True)
        first = purge_record(raw, datetime.now(UTC))
        await publish_dead_letter(app.js, first.dlq_subject, first.entry, msg_id=first.msg_id)
        assert first.reply_to is not None and first.response is not None
        await app.publish_response(first.reply_to, encoder.encode(first.response))
        report = await purge_tasks(app, delayed=False, schedules=False)
        assert report.removed == {"queued tasks": 1}
        assert await app.dlq.count() == 1
        assert await _stored(app, RESP_STREAM, f"RESP.*.{fut.id}") == 1
        assert await _stored(app, TASKS_STREAM, "TASKS.>") == 0
