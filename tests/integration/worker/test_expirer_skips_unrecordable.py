"""A queued message the expirer cannot read or keep whole does not hold back later expiries.

The expirer walks the oldest messages first; one that raised (a deeply nested body, an
entry larger than max_payload) used to end every pass at the same message, and the
stream's max_age then removed the later ones with no record.
"""

from __future__ import annotations

import asyncio

import pytest
from worker_helpers import dlq_entries

from ebind import App, Retention
from ebind.errors import TaskFailed
from ebind.expirer import Expirer

pytestmark = pytest.mark.timeout(60)


def _app(nats_url: str) -> App:
    return App("expiry", nats_url=nats_url, retention=Retention(tasks=1))


async def test_a_deeply_nested_message_is_recorded_and_the_next_one_too(nats_url: str) -> None:
    async with _app(nats_url) as app:
        deep = b'{"id":"h1","name":"exp.nobody","payload":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
        await app.js.publish("TASKS.exp.nobody", deep)
        fut = await app.enqueue("exp.unserved", 1)
        await asyncio.sleep(1.2)
        assert await Expirer(app).sweep() == 2
        [nested] = await dlq_entries(app, "exp.nobody")
        assert nested.task is None and nested.raw == deep
        [entry] = await dlq_entries(app, "exp.unserved")
        assert entry.task is not None and entry.task.id == fut.id
        with pytest.raises(TaskFailed, match="expired"):
            await fut.result(timeout=5)


async def test_a_large_unserved_task_is_recorded_cut_and_the_next_one_too(nats_url: str) -> None:
    async with _app(nats_url) as app:
        big = await app.enqueue("exp.big", "x" * (app.max_payload // 2))
        fut = await app.enqueue("exp.unserved", 1)
        await asyncio.sleep(1.2)
        assert await Expirer(app).sweep() == 2
        [entry] = await dlq_entries(app, "exp.big")
        assert entry.raw == b"" and entry.task is not None and entry.task.id == big.id
        assert entry.left_out[0].startswith("raw: ")
        assert len(await dlq_entries(app, "exp.unserved")) == 1
        with pytest.raises(TaskFailed):
            await fut.result(timeout=5)
