"""Every way a DAG step delivery is handed back (nak'd) releases its claim on the worker."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import pytest

from ebind.app import App
from ebind.retry import RetryPolicy
from ebind.wire import TaskEnvelope, TaskError, encoder
from ebind.worker import runner as runner_mod
from ebind.worker.outcome import AttemptError
from ebind.worker.runner import UNKNOWN_HANDLER_DELAY, AttemptRunner

POLICY = RetryPolicy(initial_interval=0.5, backoff_coefficient=1.0, maximum_attempts=3)


class Delivery:
    """A JetStream delivery as the runner sees it, recording what was done with it."""

    def __init__(self, name: str, delivered: int) -> None:
        env = TaskEnvelope(
            id="d:s",
            name=name,
            payload=msgspec.Raw(b"[]"),
            reply_to="RESP.c.d:s",
            dag_id="d",
            step_id="s",
        )
        self.data = encoder.encode(env)
        self.subject = f"TASKS.{name}"
        self.reply = f"$JS.ACK.EBIND_TASKS.w.{delivered}.7.7.0.0"
        self.headers = None
        self.acts: list[tuple[str, float | None]] = []

    async def ack(self) -> None:
        self.acts.append(("ack", None))

    async def nak(self, delay: float | None = None) -> None:
        self.acts.append(("nak", delay))

    async def term(self) -> None:
        self.acts.append(("term", None))


class ReleaseRecorder:
    """A step hook that starts every step and records releases; outcomes may be made to fail."""

    def __init__(self, *, done_fails: bool = False, failed_fails: bool = False) -> None:
        self.done_fails = done_fails
        self.failed_fails = failed_fails
        self.released: list[tuple[int, float]] = []

    async def on_step_started(self, env: TaskEnvelope) -> bool:
        return True

    async def on_step_done(self, env: TaskEnvelope, result: bytes) -> None:
        if self.done_fails:
            raise RuntimeError("store unavailable")

    async def on_step_failed(self, env: TaskEnvelope, error: TaskError) -> None:
        if self.failed_fails:
            raise RuntimeError("store unavailable")

    def on_step_released(self, env: TaskEnvelope, redeliver_in: float) -> None:
        self.released.append((env.attempt, redeliver_in))


def make_runner(
    hook: ReleaseRecorder,
    chain: Callable[..., Awaitable[bytes]],
    *,
    respond_ok: bool = True,
) -> AttemptRunner:
    app = App("t")

    @app.task(name="t.step", retry=POLICY)
    def step() -> int:
        return 1

    class Js:
        async def publish(self, *_: Any, **__: Any) -> None:
            return None

    async def publish_response(*_: Any, **__: Any) -> None:
        if not respond_ok:
            raise ConnectionError("EBIND_RESP has no leader")

    fake = types.SimpleNamespace(
        registry=app.registry,
        nc=types.SimpleNamespace(is_connected=True),
        js=Js(),
        publish_response=publish_response,
    )
    return AttemptRunner(
        fake,
        worker_id="w",
        chain=chain,
        hook=hook,  # type: ignore[arg-type]
        default_policy=RetryPolicy(),
        executor=ThreadPoolExecutor(1),
        max_payload=1 << 20,
    )


async def succeed(*_: Any) -> bytes:
    return b"1"


async def fail_retryable(*_: Any) -> bytes:
    raise AttemptError(TaskError(kind="error", message="flaky", retryable=True))


async def fail_for_good(*_: Any) -> bytes:
    raise AttemptError(TaskError(kind="error", message="broken", retryable=False))


async def test_retry_releases_with_the_retry_delay() -> None:
    hook = ReleaseRecorder()
    msg = Delivery("t.step", 1)
    await make_runner(hook, fail_retryable).process(msg)
    assert msg.acts == [("nak", 0.5)]
    assert hook.released == [(1, 0.5)]


@pytest.mark.parametrize(
    ("hook", "chain"),
    [
        (ReleaseRecorder(done_fails=True), succeed),
        (ReleaseRecorder(failed_fails=True), fail_for_good),
    ],
    ids=["on_step_done-fails", "on_step_failed-fails"],
)
async def test_failing_step_hook_releases(
    hook: ReleaseRecorder, chain: Callable[..., Awaitable[bytes]]
) -> None:
    msg = Delivery("t.step", 1)
    await make_runner(hook, chain).process(msg)
    assert [a for a, _ in msg.acts] == ["nak"]
    assert hook.released == [(1, msg.acts[0][1])]


async def test_unknown_handler_nak_releases() -> None:
    hook = ReleaseRecorder()
    msg = Delivery("t.nobody_has_this", 1)
    await make_runner(hook, succeed).process(msg)
    assert msg.acts == [("nak", UNKNOWN_HANDLER_DELAY)]
    assert hook.released == [(1, UNKNOWN_HANDLER_DELAY)]


async def test_response_that_cannot_be_stored_releases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_mod, "RESPOND_PATIENCE", 0.0)
    hook = ReleaseRecorder()
    msg = Delivery("t.step", 1)
    await make_runner(hook, succeed, respond_ok=False).process(msg)
    assert [a for a, _ in msg.acts] == ["nak"]
    assert hook.released == [(1, msg.acts[0][1])]


async def test_shutdown_cancel_releases_and_still_cancels() -> None:
    async def cancelled(*_: Any) -> bytes:
        raise asyncio.CancelledError

    hook = ReleaseRecorder()
    with pytest.raises(asyncio.CancelledError):
        await make_runner(hook, cancelled).process(Delivery("t.step", 2))
    assert hook.released == [(2, 0.0)]


async def test_success_and_dead_letter_release_nothing() -> None:
    hook = ReleaseRecorder()
    ok, dead = Delivery("t.step", 1), Delivery("t.step", 1)
    runner = make_runner(hook, succeed)
    await runner.process(ok)
    runner.chain = fail_for_good
    await runner.process(dead)
    assert ok.acts == [("ack", None)]
    assert dead.acts == [("term", None)]
    assert hook.released == []


async def test_a_hook_without_release_is_left_alone() -> None:
    class OldHook(ReleaseRecorder):
        on_step_released = None  # type: ignore[assignment]

    msg = Delivery("t.step", 1)
    await make_runner(OldHook(), fail_retryable).process(msg)
    assert msg.acts == [("nak", 0.5)]
