"""Dead letters of messages near the server's max_payload are stored, cut to fit.

A dead letter holds the task (and, for a message that may not run, its raw bytes base64
encoded, a third larger), so it can be larger than the message itself. The server refuses
a publish over max_payload and nats-py then closes the connection for good; the entry is
cut instead (``left_out`` says what went), the worker keeps running, and the waiter gets
its failure.
"""

from __future__ import annotations

import pytest
from worker_helpers import dlq_entries, running, tasks_empty, wait_for

from ebind import App, RetryPolicy
from ebind.errors import PayloadTooLarge, TaskFailed

pytestmark = pytest.mark.timeout(60)


async def test_a_failing_task_near_max_payload_is_dead_lettered_and_the_worker_goes_on(
    app: App, other_app: App
) -> None:
    @app.task(name="big.fails", retry=RetryPolicy.none())
    async def fails(x: str) -> str:
        raise RuntimeError("boom")

    @app.task(name="big.ok")
    async def ok() -> str:
        return "ok"

    async with running(app):
        # As large as the producer's own check allows: the dead letter adds the error.
        size = app.max_payload - 100
        while True:
            try:
                fut = await other_app.enqueue("big.fails", "x" * size)
                break
            except PayloadTooLarge:
                size -= 50
        with pytest.raises(TaskFailed, match="boom"):
            await fut.result(timeout=15)
        assert not app.nc.is_closed
        later = await other_app.enqueue("big.ok")
        assert await later.result(timeout=10) == "ok"
    [entry] = await dlq_entries(other_app, "big.fails")
    assert entry.task is None
    assert entry.error.message.startswith("RuntimeError: boom")
    assert len(entry.left_out) == 1
    assert entry.left_out[0].startswith(f"task big.fails {fut.id}: ")


async def test_an_invalid_message_too_large_to_keep_whole_is_dead_lettered(app: App) -> None:
    @app.task(name="big.echo")
    async def echo(x: str) -> str:
        return x

    pad = "x" * int(app.max_payload * 0.8)
    bad = b'{"id":"bad id!","name":"big.echo","payload":["' + pad.encode() + b'"]}'
    await app.js.publish("TASKS.big.echo", bad)
    async with running(app):
        await wait_for(lambda: tasks_empty(app), 15)
    [entry] = await dlq_entries(app, "big.echo")
    assert entry.raw == b""
    assert entry.left_out[0].startswith(f"raw: {len(bad)} bytes, sha256 ")
    assert "task id" in entry.error.message
