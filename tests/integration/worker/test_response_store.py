"""A task that succeeded but whose response could not be stored at once keeps its attempt."""

from __future__ import annotations

import asyncio
from collections import Counter

import structlog
from worker_helpers import running, tasks_empty, wait_for

from ebind.app import App
from ebind.retry import RetryPolicy
from ebind.streams import RESP_STREAM, ensure_streams
from ebind.wire import decode_response


async def test_a_response_store_outage_does_not_turn_a_success_into_worker_lost(app: App) -> None:
    gate, runs = asyncio.Event(), Counter[str]()

    @app.task(name="rs.once", retry=RetryPolicy.none())
    async def once(x: int) -> int:
        runs["once"] += 1
        await gate.wait()
        return x * 2

    with structlog.testing.capture_logs() as logs:
        async with running(app, ack_wait=2.0):
            fut = await once.delay(21)
            await wait_for(lambda: runs["once"] > 0)
            # EBIND_RESP is gone while the handler finishes: the response cannot be stored.
            await app.js.delete_stream(RESP_STREAM)
            gate.set()
            await wait_for(lambda: any(e["event"] == "worker.respond_failed" for e in logs))
            await asyncio.sleep(1.5)  # longer than the nak delay the worker used to give it
            await ensure_streams(app.js, 1)
            await wait_for(lambda: tasks_empty(app), 30)
    assert runs["once"] == 1
    assert await app.dlq.count() == 0  # no worker_lost dead letter for a task that succeeded
    stored = await app.js.get_last_msg(RESP_STREAM, f"RESP.{app.client_id}.{fut.id}")
    resp = decode_response(stored.data)
    assert resp.error is None and resp.result is not None and bytes(resp.result) == b"42"
