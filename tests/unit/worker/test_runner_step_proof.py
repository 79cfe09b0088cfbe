"""A DAG step message that is not the scheduler's dispatch is dead-lettered raw and nothing else."""

from __future__ import annotations

import types
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from runner_delivery import Delivery

from ebind.app import App
from ebind.retry import RetryPolicy
from ebind.wire import DLQEntry, ErrorKind, TaskEnvelope, TaskError, encoder
from ebind.worker.hook import StepUnproven
from ebind.worker.runner import UNKNOWN_HANDLER_DELIVERIES, AttemptRunner


def _delivery(data: bytes, delivered: int) -> Delivery:
    return Delivery(data, delivered, "TASKS.t.step")


class _RefusingHook:
    """A step hook that refuses every start as unproven and records every call."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def on_step_started(self, env: TaskEnvelope) -> bool:
        self.calls.append("started")
        raise StepUnproven("not its dispatch: forged")

    async def on_step_done(self, env: TaskEnvelope, result: bytes) -> None:
        self.calls.append("done")

    async def on_step_failed(self, env: TaskEnvelope, error: TaskError) -> None:
        self.calls.append("failed")


class _Rig:
    def __init__(self, hook: Any) -> None:
        app = App("t")

        @app.task(name="t.step", retry=RetryPolicy.none())
        def step(x: int) -> int:
            return x

        self.dlq: list[tuple[str, bytes]] = []
        self.responses: list[str] = []
        self.ran = 0
        rig = self

        class _Js:
            async def publish(self, subject: str, data: bytes, **_: Any) -> None:
                rig.dlq.append((subject, data))

        async def publish_response(subject: str, *_: Any, **__: Any) -> None:
            rig.responses.append(subject)

        async def chain(*_: Any) -> bytes:
            rig.ran += 1
            return b"1"

        fake = types.SimpleNamespace(
            registry=app.registry, nc=None, js=_Js(), publish_response=publish_response
        )
        self.pool = ThreadPoolExecutor(1)
        self.runner = AttemptRunner(
            fake,
            worker_id="w",
            chain=chain,
            hook=hook,
            default_policy=RetryPolicy(),
            executor=self.pool,
            max_payload=1 << 20,
        )

    def entry(self) -> DLQEntry:
        assert len(self.dlq) == 1
        subject, data = self.dlq[0]
        assert subject == "DLQ.t.step"
        return msgspec.json.decode(data, type=DLQEntry)


def _raw(**over: Any) -> bytes:
    env = TaskEnvelope(
        id="d:s",
        name="t.step",
        payload=msgspec.Raw(b"[666]"),
        reply_to="RESP.c.d:s",
        dag_id="d",
        step_id="s",
        **over,
    )
    return encoder.encode(env)


@pytest.mark.parametrize(
    "over",
    [{}, {"deadline": datetime.now(UTC) - timedelta(seconds=5)}],
    ids=["before-the-handler", "past-its-deadline"],
)
async def test_an_unproven_step_is_dead_lettered_raw_without_failing_the_step(
    over: dict[str, Any],
) -> None:
    hook = _RefusingHook()
    rig = _Rig(hook)
    data = _raw(**over)
    msg = _delivery(data, 1)
    await rig.runner.process(msg)
    rig.pool.shutdown()
    entry = rig.entry()
    assert entry.raw == data and entry.task is None
    assert entry.error.kind == ErrorKind.STEP_UNPROVEN.value
    assert "forged" in entry.error.message
    assert msg.acts == ["term"]
    assert hook.calls == ["started"]  # on_step_failed would fail the real step
    assert rig.ran == 0 and rig.responses == []


async def test_a_worker_without_the_step_hook_never_runs_a_dag_step() -> None:
    rig = _Rig(None)
    data = _raw()
    for delivered in range(1, UNKNOWN_HANDLER_DELIVERIES):
        msg = _delivery(data, delivered)
        await rig.runner.process(msg)
        assert msg.acts == ["nak"]  # for a worker with the hook to take
    assert rig.dlq == []
    last = _delivery(data, UNKNOWN_HANDLER_DELIVERIES)
    await rig.runner.process(last)
    rig.pool.shutdown()
    entry = rig.entry()
    assert entry.raw == data and entry.error.kind == ErrorKind.STEP_UNPROVEN.value
    assert "without the workflow step hook" in entry.error.message
    assert last.acts == ["term"]
    assert rig.ran == 0 and rig.responses == []
