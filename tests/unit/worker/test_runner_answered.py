"""A redelivery of a task that was answered meanwhile is acked before any other check."""

from __future__ import annotations

import types
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import msgspec

from ebind.app import App
from ebind.retry import RetryPolicy
from ebind.wire import TaskEnvelope, encoder
from ebind.worker.runner import AttemptRunner


class _Msg:
    """The parts of a JetStream delivery the runner uses."""

    def __init__(self, data: bytes, delivered: int) -> None:
        self.data = data
        self.subject = "TASKS.t.once"
        self.reply = f"$JS.ACK.EBIND_TASKS.w.{delivered}.7.7.0.0"
        self.headers = None
        self.acts: list[str] = []

    async def ack(self) -> None:
        self.acts.append("ack")

    async def nak(self, delay: float | None = None) -> None:
        self.acts.append("nak")

    async def term(self) -> None:
        self.acts.append("term")


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
        msg = _Msg(encoder.encode(env), delivered=2)
        await runner.process(msg)
    assert msg.acts == ["ack"]
    assert published == []  # no dead letter, no error response over the stored answer
