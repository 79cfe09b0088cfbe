"""NatsEnqueuer delegates to the publish path; CaptureEnqueuer records and dedupes by msg-id."""

from __future__ import annotations

import asyncio

import pytest

from ebind.errors import PublishFailed
from ebind.wire import TaskEnvelope
from ebind.workflow.enqueuer import CaptureEnqueuer, NatsEnqueuer


def env(i: str) -> TaskEnvelope:
    return TaskEnvelope(id=f"d:{i}", name="t.fn", dag_id="d", step_id=i)


async def test_nats_enqueuer_passes_msg_id_defaulting_to_the_envelope_id() -> None:
    calls: list[tuple[str, str]] = []

    async def publish(e: TaskEnvelope, *, msg_id: str) -> None:
        calls.append((e.id, msg_id))

    enq = NatsEnqueuer(publish)
    await enq.enqueue(env("a"))
    await enq.enqueue(env("b"), msg_id="d:b:2")
    assert calls == [("d:a", "d:a"), ("d:b", "d:b:2")]


async def test_capture_dedupes_by_msg_id_and_injects_failures() -> None:
    enq = CaptureEnqueuer()
    waiter = asyncio.create_task(enq.wait_for(2))
    await enq.enqueue(env("a"), msg_id="d:a:0")
    await enq.enqueue(env("a"), msg_id="d:a:0")
    enq.fail_next(PublishFailed("down"))
    with pytest.raises(PublishFailed):
        await enq.enqueue(env("b"))
    await enq.enqueue(env("b"))
    async with asyncio.timeout(1):
        assert [e.id for e in await waiter] == ["d:a", "d:b"]
    assert enq.step_ids() == ["a", "b"] and enq.duplicates == 1 and len(enq.calls) == 3
    hook = CaptureEnqueuer(fail=lambda e, mid: PublishFailed("no") if e.step_id == "x" else None)
    with pytest.raises(PublishFailed):
        await hook.enqueue(env("x"))
    assert hook.calls == []
