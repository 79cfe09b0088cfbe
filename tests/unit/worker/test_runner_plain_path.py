"""The flat path for plain deliveries: who takes it, who falls back, and that outcomes match.

A delivery takes ``AttemptRunner._run_plain`` only when every check before its run would
let it through; everything else takes the full path. Each outcome (result, retry, dead
letter, bad arguments, revocation while running, a result too large) is run both ways
and must settle the message, answer and log the same.
"""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
import structlog.testing
from runner_delivery import Delivery

from ebind.app import App
from ebind.context import Context
from ebind.errors import NonRetryable
from ebind.retry import RetryPolicy
from ebind.streams import dlq_subject
from ebind.wire import TaskEnvelope, TaskResponse, decode_response, encoder
from ebind.worker.middleware import (
    Handler,
    add_outcome_listener,
    chain,
    log_middleware,
    steps_only,
)
from ebind.worker.runner import AttemptRunner

NAME = "t.plain"


class _Revocations:
    """Revocations with a fixed answer; records the attempts it was told about."""

    def __init__(self, revoked: bool = False) -> None:
        self.revoked = revoked
        self.running_ids: list[str] = []
        self.open: set[str] = set()

    def surely_clear(self, task_id: str, stored_ns: int | None) -> bool:
        return not self.revoked

    async def is_revoked(self, task_id: str, stored_ns: int | None) -> bool:
        return self.revoked

    def running(self, task_id: str, ctx: Context, task: asyncio.Task[Any] | None) -> None:
        self.running_ids.append(task_id)
        self.open.add(task_id)

    def finished(self, task_id: str) -> None:
        self.open.discard(task_id)


class _Rig:
    """An AttemptRunner over a fake App that records responses, dead letters and paths."""

    def __init__(self, app: App, pool: ThreadPoolExecutor, middleware: list[Any]) -> None:
        self.responses: list[TaskResponse] = []
        self.dead: list[str] = []
        self.paths: list[str] = []
        rig = self

        class _Js:
            async def publish(self, subject: str, *_: Any, **__: Any) -> None:
                rig.dead.append(subject)

        async def publish_response(subject: str, data: bytes, **_: Any) -> None:
            self.responses.append(decode_response(data))

        fake = types.SimpleNamespace(
            registry=app.registry, nc=None, js=_Js(), publish_response=publish_response
        )
        self.runner = AttemptRunner(
            fake,
            worker_id="w",
            chain=_never,
            hook=None,
            default_policy=RetryPolicy(),
            executor=pool,
            max_payload=1 << 20,
        )
        self.runner.chain = chain(middleware, self.runner.base_handler())
        self.revocations = _Revocations()
        self.runner.revocations = self.revocations  # type: ignore[assignment]
        plain, full = self.runner._run_plain, self.runner._process

        async def run_plain(*a: Any) -> None:
            self.paths.append("plain")
            await plain(*a)

        async def process(*a: Any) -> None:
            self.paths.append("full")
            await full(*a)

        self.runner._run_plain = run_plain  # type: ignore[method-assign]
        self.runner._process = process  # type: ignore[method-assign]


async def _never(ctx: Context, env: TaskEnvelope) -> bytes:
    raise AssertionError("placeholder chain")


def _passthrough(nxt: Handler) -> Handler:
    """A middleware that changes nothing, yet keeps every delivery on the full path."""

    async def handler(ctx: Context, env: TaskEnvelope) -> bytes:
        return await nxt(ctx, env)

    return handler


def _env(**fields: Any) -> TaskEnvelope:
    base: dict[str, Any] = {
        "id": "id1",
        "name": NAME,
        "payload": msgspec.Raw(b"[2]"),
        "reply_to": "RESP.c.id1",
        "enqueued_at": datetime.now(UTC),
    }
    base.update(fields)
    return TaskEnvelope(**base)


def _delivery(env: TaskEnvelope | bytes, delivered: int = 1, stored_ns: int = 0) -> Delivery:
    data = env if isinstance(env, bytes) else encoder.encode(env)
    msg = Delivery(data, delivered, f"TASKS.{NAME}")
    msg.reply = f"$JS.ACK.EBIND_TASKS.w.{delivered}.7.7.{stored_ns or time.time_ns()}.0"
    return msg


async def _run(
    fn: Callable[..., Any],
    msg_env: TaskEnvelope | bytes,
    *,
    middleware: list[Any] | None = None,
    delivered: int = 1,
    stored_ns: int = 0,
    setup: Callable[[App, _Rig], None] | None = None,
    **task_options: Any,
) -> tuple[_Rig, Delivery]:
    app = App("t")
    app.task(name=NAME, **task_options)(fn)
    with ThreadPoolExecutor(1) as pool:
        rig = _Rig(app, pool, [log_middleware] if middleware is None else middleware)
        if setup is not None:
            setup(app, rig)
        msg = _delivery(msg_env, delivered, stored_ns)
        await rig.runner.process(msg)
    return rig, msg


async def _double(x: int) -> int:
    return x * 2


# ------------------------------------------------------------------ who takes which path
async def test_a_plain_task_takes_the_flat_path_and_is_answered_then_acked() -> None:
    rig, msg = await _run(_double, _env())
    assert rig.paths == ["plain"]
    assert msg.acts == ["ack"]
    assert [bytes(r.result or b"") for r in rig.responses] == [b"4"]
    assert rig.revocations.running_ids == ["id1"] and not rig.revocations.open


async def test_the_workflow_context_middleware_keeps_plain_tasks_on_the_flat_path() -> None:
    def dag_only(nxt: Handler) -> Handler:
        return nxt

    rig, msg = await _run(_double, _env(), middleware=[steps_only(dag_only), log_middleware])
    assert rig.paths == ["plain"]
    assert msg.acts == ["ack"]


async def test_a_sync_handler_takes_the_flat_path() -> None:
    def triple(x: int) -> int:
        return x * 3

    rig, msg = await _run(triple, _env())
    assert rig.paths == ["plain"]
    assert [bytes(r.result or b"") for r in rig.responses] == [b"6"]
    assert msg.acts == ["ack"]


@pytest.mark.parametrize(
    ("why", "env_fields", "options", "delivered"),
    [
        ("a redelivery", {}, {}, 2),
        ("a deadline", {"deadline": datetime.now(UTC) + timedelta(hours=1)}, {}, 1),
        ("a time limit in the envelope", {"timeout": 30.0}, {}, 1),
        ("a time limit on the task", {}, {"timeout": 30.0}, 1),
        ("a concurrency limit", {}, {"concurrency": 2}, 1),
    ],
)
async def test_deliveries_with_more_to_check_take_the_full_path(
    why: str, env_fields: dict[str, Any], options: dict[str, Any], delivered: int
) -> None:
    rig, msg = await _run(_double, _env(**env_fields), delivered=delivered, **options)
    assert rig.paths == ["full"], why
    assert msg.acts == ["ack"], why  # and still run as before
    assert [bytes(r.result or b"") for r in rig.responses] == [b"4"], why


async def test_a_rate_limited_task_takes_the_full_path_and_waits_for_its_token() -> None:
    admitted: list[str] = []

    class _Admission:
        async def admit(self, msg: Any, env: TaskEnvelope, spec: Any, seq: int) -> bool:
            admitted.append(env.id)
            return True

    def setup(app: App, rig: _Rig) -> None:
        rig.runner.admission = _Admission()  # type: ignore[assignment]

    rig, msg = await _run(_double, _env(), setup=setup, rate_limit="10/s")
    assert rig.paths == ["full"]
    assert admitted == ["id1"]
    assert msg.acts == ["ack"]


async def test_a_revoked_task_takes_the_full_path_and_is_dead_lettered_unrun() -> None:
    ran: list[int] = []

    async def handler(x: int) -> int:
        ran.append(x)
        return x

    def setup(app: App, rig: _Rig) -> None:
        rig.revocations.revoked = True

    rig, msg = await _run(handler, _env(), setup=setup)
    assert rig.paths == ["full"]
    assert ran == []
    assert msg.acts == ["term"]
    assert rig.dead == [dlq_subject(NAME)]
    assert [r.error.kind for r in rig.responses if r.error] == ["revoked"]


async def test_an_expired_task_takes_the_full_path_and_is_dead_lettered() -> None:
    def setup(app: App, rig: _Rig) -> None:
        rig.runner._horizon = 60.0
        rig.runner._horizon_ns = 60 * 10**9

    old = time.time_ns() - 3600 * 10**9
    rig, msg = await _run(_double, _env(), stored_ns=old, setup=setup)
    assert rig.paths == ["full"]
    assert msg.acts == ["term"]
    assert [r.error.kind for r in rig.responses if r.error] == ["expired"]


async def test_a_fresh_task_within_the_horizon_takes_the_flat_path() -> None:
    def setup(app: App, rig: _Rig) -> None:
        rig.runner._horizon = 60.0
        rig.runner._horizon_ns = 60 * 10**9

    rig, msg = await _run(_double, _env(), setup=setup)
    assert rig.paths == ["plain"]
    assert msg.acts == ["ack"]


async def test_a_malformed_envelope_is_dead_lettered_before_either_path() -> None:
    rig, msg = await _run(_double, b'{"id": "id1", "name": 7}')
    assert rig.paths == []
    assert msg.acts == ["term"]
    assert rig.responses == []
    assert len(rig.dead) == 1


async def test_a_user_middleware_keeps_every_delivery_on_the_full_path() -> None:
    seen: list[str] = []

    def mw(nxt: Handler) -> Handler:
        async def handler(ctx: Context, env: TaskEnvelope) -> bytes:
            seen.append(env.id)
            return await nxt(ctx, env)

        return handler

    rig, msg = await _run(_double, _env(), middleware=[mw, log_middleware])
    assert rig.paths == ["full"]
    assert seen == ["id1"]
    assert msg.acts == ["ack"]


async def test_a_dag_step_takes_the_full_path() -> None:
    env = _env(id="d1:s1", dag_id="d1", step_id="s1", reply_to="")
    rig, msg = await _run(_double, env)
    assert rig.paths == ["full"]
    assert msg.acts == ["nak"]  # no step hook on this worker: left for one that has it


# ------------------------------------------------------------------ same outcomes both ways
async def _flaky(x: int) -> int:
    raise ValueError(f"bad {x}")


async def _refuses(x: int) -> int:
    raise NonRetryable("never")


async def _huge(x: int) -> str:
    return "x" * (1 << 20)


class _Custom(Exception):
    pass


async def _custom(x: int) -> int:
    raise _Custom("no")


async def _revoked_while_running(ctx: Context, x: int) -> int:
    ctx.revoked = True  # what the revocations object sets before it cancels the attempt
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    await asyncio.sleep(1)
    return x


def _flagged_then_returned(ctx: Context, x: int) -> int:
    ctx.revoked = True  # a sync handler's thread cannot be cancelled, only flagged
    return x


_CASES: list[tuple[str, Callable[..., Any], dict[str, Any], bytes]] = [
    ("result", _double, {}, b"[2]"),
    ("retry", _flaky, {"retry": RetryPolicy(maximum_attempts=3)}, b"[2]"),
    ("dead letter", _flaky, {"retry": RetryPolicy.none()}, b"[2]"),
    ("non-retryable", _refuses, {}, b"[2]"),
    ("dont_retry", _custom, {"dont_retry": (_Custom,)}, b"[2]"),
    ("bad arguments", _double, {}, b'["two"]'),
    ("result too large", _huge, {}, b"[2]"),
    ("revoked while running", _revoked_while_running, {}, b"[2]"),
    ("revoked, returned anyway", _flagged_then_returned, {}, b"[2]"),
]


_EXPECTED = {
    "result": "ack",
    "retry": "nak",
    "dead letter": "term",
    "non-retryable": "term",
    "dont_retry": "term",
    "bad arguments": "term",
    "result too large": "term",
    "revoked while running": "term",
    "revoked, returned anyway": "term",
}


def _settled(rig: _Rig, msg: Delivery, logs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "acts": msg.acts,
        "dead": rig.dead,
        "responses": [
            (bytes(r.result) if r.result is not None else None, r.error, r.attempts)
            for r in rig.responses
        ],
        "lines": sorted(
            (line["event"], line.get("error_kind"), line.get("attempt"))
            for line in logs
            if str(line.get("event", "")).startswith("task.")
        ),
    }


@pytest.mark.parametrize(("case", "fn", "options", "payload"), _CASES, ids=[c[0] for c in _CASES])
async def test_the_flat_path_settles_like_the_full_path(
    case: str, fn: Callable[..., Any], options: dict[str, Any], payload: bytes
) -> None:
    outcomes = []
    for middleware, path in (([log_middleware], "plain"), ([_passthrough, log_middleware], "full")):
        with structlog.testing.capture_logs() as logs:
            rig, msg = await _run(
                fn, _env(payload=msgspec.Raw(payload)), middleware=middleware, **options
            )
        assert rig.paths == [path], case
        assert not rig.revocations.open, case
        outcomes.append(_settled(rig, msg, logs))
    assert outcomes[0] == outcomes[1], case
    assert outcomes[0]["acts"] == [_EXPECTED[case]], case


async def test_listeners_a_handler_adds_hear_the_outcome_on_the_flat_path() -> None:
    heard: list[tuple[str, str | None]] = []

    async def handler(ctx: Context, x: int) -> int:
        add_outcome_listener(
            ctx, lambda outcome, error: heard.append((outcome, error and error.kind))
        )
        if x > 1:
            raise ValueError("no")
        return x

    for payload, expected in ((b"[1]", ("succeeded", None)), (b"[2]", ("retrying", "handler"))):
        heard.clear()
        rig, _ = await _run(handler, _env(payload=msgspec.Raw(payload)))
        assert rig.paths == ["plain"]
        assert heard == [expected]
