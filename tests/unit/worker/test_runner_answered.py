"""A redelivery of a task that was answered meanwhile is acked before any other check."""

from __future__ import annotations

import types
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import msgspec
from runner_delivery import Delivery

from ebind.app import App
from ebind.retry import RetryPolicy
from ebind.wire import TaskEnvelope, encoder
from ebind.worker.runner import AttemptRunner


def _delivery(data: bytes, delivered: int) -> Delivery:
    return Delivery(data, delivered, "TASKS.t.once")


async def test_an_answered_redelivery_over_the_attempt_limit_is_acked_not_dead_lettered() -> None:
    app = App("t")

    @app.task(name="t.once", retry=RetryPolicy.none())  # one attempt allowed
    def once(x: int) -> int:
        return x

    published: list[str] = []

    class _Js:
        async def publish(self, subject: str, *_: Any, **__: Any) -> None:
            published.append(subject)

    async def publish_response(subject: str, *_: Any, **__: Any) -> None:
        published.append(subject)

    async def must_not_run(*_: Any) -> bytes:
        raise AssertionError("an answered task must not run again")

    fake = types.SimpleNamespace(
        registry=app.registry, nc=None, js=_Js(), publish_response=publish_response
    )
    with ThreadPoolExecutor(1) as pool:
        runner = AttemptRunner(
            fake,
            worker_id="w",
            chain=must_not_run,
            hook=None,
            default_policy=RetryPolicy(),
            executor=pool,
            max_payload=1 << 20,
        )

        async def answered(_env: TaskEnvelope) -> bool:
            return True  # the first delivery's response is stored

        runner._answered = answered  # type: ignore[method-assign]
        env = TaskEnvelope(
            id="id1",
            name="t.once",
            payload=msgspec.Raw(b"[1]"),
            reply_to="RESP.c.id1",
            enqueued_at=datetime.now(UTC),
        )
        msg = _delivery(encoder.encode(env), delivered=2)
        await runner.process(msg)
    assert msg.acts == ["ack"]
    assert published == []  # no dead letter, no error response over the stored answer
