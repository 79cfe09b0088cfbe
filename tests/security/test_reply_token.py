"""Another producer cannot answer a task whose id it knows.

A producer may only publish tasks, yet a task names the subject its response goes to.
One that knows (or guesses) another client's task id, say an order id used as the task id
for deduplication, can send a task of its own with that id and that client's reply
subject, and a worker answers it there. The victim's task carries a secret reply token
its response must echo: the victim's Future ignores the forged answer, the worker stores
the real response over it, and a Future rebuilt with the token finds the real one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from worker_helpers import running

from ebind.app import App
from ebind.errors import InvalidName
from ebind.streams import resp_subject

pytestmark = pytest.mark.timeout(60)


def _forged(client_id: str, task_id: str, value: str) -> bytes:
    return msgspec.json.encode(
        {
            "id": task_id,
            "name": "sec.echo",
            "payload": [value],
            "reply_to": resp_subject(client_id, task_id),
        }
    )


async def _tasks(app: App) -> None:
    @app.task(name="sec.echo")
    async def echo(value: str = "ok") -> str:
        return value

    @app.task(name="sec.charge")
    async def charge(order: str) -> str:
        await asyncio.sleep(1.0)
        return f"charged {order}"


@pytest.fixture
async def victim(app: App, nats_url: str) -> AsyncIterator[App]:
    """A producer with a fixed client id, while a worker of ``app`` runs the tasks."""
    await _tasks(app)
    async with App("orders", nats_url=nats_url, client_id="orders-api") as producer, running(app):
        yield producer


async def test_a_forged_answer_before_the_real_one_is_ignored(victim: App, attacker: Any) -> None:
    fut = await victim.apply_async("sec.charge", ["42"], task_id="order-42")
    await attacker.publish("TASKS.sec.echo", _forged("orders-api", "order-42", "pwned"))
    assert await fut.result(10) == "charged 42"
    # Rebuilt elsewhere with the token: the stored response is the real one.
    again = victim.future("order-42", token=fut.token)
    assert await again.result(5) == "charged 42"


async def test_a_forged_answer_after_the_real_one_is_not_taken_by_a_rebuilt_future(
    victim: App, attacker: Any
) -> None:
    fut = await victim.apply_async("sec.echo", ["mine"], task_id="order-43")
    assert await fut.result(10) == "mine"
    await attacker.publish("TASKS.sec.echo", _forged("orders-api", "order-43", "pwned"))
    await asyncio.sleep(0.5)  # the worker stores the forged answer over it
    rebuilt = victim.future("order-43", token=fut.token)
    with pytest.raises(TimeoutError):
        await rebuilt.result(1.5)


async def test_a_token_that_is_no_token_is_refused(app: App) -> None:
    with pytest.raises(InvalidName, match="not a reply token"):
        app.future("t1", token="NOT-HEX")
