"""chain() order, recover innermost, outcome listeners and the canonical log line."""

from __future__ import annotations

import pytest
import structlog.testing

from ebind.context import Context
from ebind.wire import TaskEnvelope, TaskError
from ebind.worker.middleware import (
    Handler,
    add_outcome_listener,
    chain,
    log_middleware,
    notify_outcome,
    recover_middleware,
)
from ebind.worker.outcome import AttemptError

ENV = TaskEnvelope(id="t1", name="demo.task")


def _ctx() -> Context:
    return Context(task_id="t1", name="demo.task", attempt=2, worker_id="w1")


def _recording(tag: str, calls: list[str]) -> object:
    def mw(next_handler: Handler) -> Handler:
        async def h(ctx: Context, env: TaskEnvelope) -> bytes:
            calls.append(f"{tag}>")
            try:
                return await next_handler(ctx, env)
            finally:
                calls.append(f"<{tag}")

        return h

    return mw


async def test_chain_first_middleware_is_outermost() -> None:
    calls: list[str] = []

    async def base(ctx: Context, env: TaskEnvelope) -> bytes:
        calls.append("base")
        return b"1"

    handler = chain([_recording("a", calls), _recording("b", calls)], base)  # type: ignore[list-item]
    assert await handler(_ctx(), ENV) == b"1"
    assert calls == ["a>", "b>", "base", "<b", "<a"]


async def test_recover_is_innermost_so_middlewares_see_attempt_errors() -> None:
    seen: list[BaseException] = []

    def spy(next_handler: Handler) -> Handler:
        async def h(ctx: Context, env: TaskEnvelope) -> bytes:
            try:
                return await next_handler(ctx, env)
            except BaseException as exc:
                seen.append(exc)
                raise

        return h

    async def base(ctx: Context, env: TaskEnvelope) -> bytes:
        raise KeyError("missing")

    with pytest.raises(AttemptError) as info:
        await chain([spy], base)(_ctx(), ENV)
    assert isinstance(seen[0], AttemptError)
    assert info.value.error.kind == "handler"
    assert info.value.error.retryable is True


async def test_recover_turns_system_exit_into_panic() -> None:
    async def base(ctx: Context, env: TaskEnvelope) -> bytes:
        raise SystemExit(1)

    with pytest.raises(AttemptError) as info:
        await recover_middleware(base)(_ctx(), ENV)
    assert info.value.error.kind == "panic"


async def test_chain_ignores_an_explicit_recover_in_the_list() -> None:
    calls: list[str] = []

    async def base(ctx: Context, env: TaskEnvelope) -> bytes:
        return b"ok"

    handler = chain([recover_middleware, _recording("a", calls)], base)  # type: ignore[list-item]
    assert await handler(_ctx(), ENV) == b"ok"
    assert calls == ["a>", "<a"]


async def test_log_middleware_emits_one_line_when_the_outcome_is_known() -> None:
    async def base(ctx: Context, env: TaskEnvelope) -> bytes:
        return b"1"

    ctx = _ctx()
    with structlog.testing.capture_logs() as logs:
        await chain([log_middleware], base)(ctx, ENV)
        assert logs == []  # nothing until the worker reports the outcome
        err = TaskError(kind="handler", message="x", retryable=True)
        notify_outcome(ctx, "retrying", err)
    assert len(logs) == 1
    line = logs[0]
    assert line["event"] == "task.retrying"
    assert line["log_level"] == "warning"
    assert {k: line[k] for k in ("task_id", "task_name", "attempt", "worker_id", "error_kind")} == {
        "task_id": "t1",
        "task_name": "demo.task",
        "attempt": 2,
        "worker_id": "w1",
        "error_kind": "handler",
    }
    assert line["duration_ms"] >= 0


def test_a_failing_listener_does_not_break_the_others() -> None:
    ctx = _ctx()
    got: list[str] = []

    def bad(outcome: str, error: TaskError | None) -> None:
        raise RuntimeError("listener bug")

    add_outcome_listener(ctx, bad)
    add_outcome_listener(ctx, lambda outcome, error: got.append(outcome))
    with structlog.testing.capture_logs() as logs:
        notify_outcome(ctx, "succeeded", None)
    assert got == ["succeeded"]
    assert logs[0]["event"] == "worker.outcome_listener_failed"


@pytest.mark.parametrize(
    ("raised", "kind", "retryable"),
    [
        (KeyError("missing"), "handler", True),
        (SystemExit(1), "panic", False),
        (TimeoutError("slow"), "timeout", True),
    ],
)
async def test_the_default_chain_in_one_frame_fails_like_log_around_recover(
    raised: BaseException, kind: str, retryable: bool
) -> None:
    async def base(ctx: Context, env: TaskEnvelope) -> bytes:
        raise raised

    errors: list[TaskError] = []
    for handler in (chain([log_middleware], base), log_middleware(recover_middleware(base))):
        ctx = _ctx()
        with pytest.raises(AttemptError) as info:
            await handler(ctx, ENV)
        errors.append(info.value.error)
        assert info.value.__cause__ is raised
        assert ctx.extras["ebind.log_claimed"] is True
        assert len(ctx.extras["ebind.outcome_listeners"]) == 1
    assert errors[0] == errors[1]
    assert (errors[0].kind, errors[0].retryable) == (kind, retryable)


async def test_the_default_chain_in_one_frame_keeps_outer_middlewares_outside() -> None:
    calls: list[str] = []

    async def base(ctx: Context, env: TaskEnvelope) -> bytes:
        calls.append("base")
        return b"1"

    handler = chain([_recording("a", calls), log_middleware], base)  # type: ignore[list-item]
    ctx = _ctx()
    assert await handler(ctx, ENV) == b"1"
    assert calls == ["a>", "base", "<a"]
    with structlog.testing.capture_logs() as logs:
        notify_outcome(ctx, "succeeded", None)
    assert [line["event"] for line in logs] == ["task.succeeded"]


async def test_the_default_chain_in_one_frame_lets_cancellation_through() -> None:
    import asyncio

    async def base(ctx: Context, env: TaskEnvelope) -> bytes:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await chain([log_middleware], base)(_ctx(), ENV)
