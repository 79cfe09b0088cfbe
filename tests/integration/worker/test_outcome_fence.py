"""The response fence on a real server: a requeued run answers over its earlier run's answer."""

from __future__ import annotations

import pytest
from worker_helpers import running, wait_for

from ebind.app import App
from ebind.errors import NonRetryable, TaskFailed
from ebind.streams import RESP_STREAM


async def _stored(app: App, task_id: str) -> int:
    info = await app.js.stream_info(RESP_STREAM, subjects_filter=f"RESP.{app.client_id}.{task_id}")
    return int(info.state.messages)


async def test_a_requeued_run_stores_its_answer_after_the_dead_lettered_run(app: App) -> None:
    calls: list[int] = []

    @app.task(name="fence.second_time")
    async def second_time(x: int) -> int:
        calls.append(x)
        if len(calls) == 1:
            raise NonRetryable("first run refuses")
        return 2 * x

    async with running(app):
        fut = await second_time.delay(4)
        with pytest.raises(TaskFailed, match="first run refuses"):
            await fut.result(timeout=10)
        letters = await app.dlq.list()
        assert [d.task.id for d in letters if d.task] == [fut.id]
        # The subject already holds the first run's answer: the fence publishes over it.
        assert await app.dlq.requeue(letters[0].seq) == fut.id

        async def answered_again() -> bool:
            return await _stored(app, fut.id) == 2

        await wait_for(answered_again, 10)
    assert calls == [4, 4]
    assert await app.future(fut.id, name="fence.second_time").result(timeout=5) == 8
    assert await app.dlq.count() == 0


async def test_a_second_answer_to_the_same_run_is_refused_by_the_stream(app: App) -> None:
    from ebind.client import SubjectMoved

    subject = f"RESP.{app.client_id}.t-once"
    await app.publish_response(subject, b'{"task_id":"t-once"}', expected_last_seq=0)
    with pytest.raises(SubjectMoved, match="no longer sequence 0"):
        await app.publish_response(subject, b'{"task_id":"t-once"}', expected_last_seq=0)
    assert await _stored(app, "t-once") == 1
