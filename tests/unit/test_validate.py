"""Untrusted-message checks (ebind.validate, ebind.workflow.event_check): every rule, both ways."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ebind.errors import InvalidName
from ebind.streams import b64_token, resp_subject, task_subject
from ebind.validate import (
    MAX_NESTING,
    MAX_TRACE_ENTRIES,
    MAX_TRACE_KEY,
    MAX_TRACE_VALUE,
    admit_envelope,
    check_future_ids,
    envelope_problem,
    nesting_depth,
    too_deep,
)
from ebind.wire import TaskEnvelope, TaskError, encoder
from ebind.workflow.event_check import admit_event, event_problem
from ebind.workflow.events import event_subject, marshal_event
from ebind.workflow.types import Event, EventKind

CLIENT = "0123456789abcdef0123456789abcdef"  # an App client id (uuid4 hex)
TASK_ID = "5b1e7a7e-3c1a-4d7e-9f00-0123456789ab"  # new_task_id()


def _env(**fields: Any) -> TaskEnvelope:
    base: dict[str, Any] = {"id": TASK_ID, "name": "mail.send"}
    base.update(fields)
    return TaskEnvelope(**base)


def _problem(env: TaskEnvelope, subject: str | None = None) -> str | None:
    return envelope_problem(env, subject or task_subject(env.name, env.target))


# ---------------------------------------------------------------------------- nesting
@pytest.mark.parametrize(
    ("data", "depth"),
    [
        (b"", 0),
        (b"1", 0),
        (b"[]", 1),
        (b"{}", 1),
        (b'{"a":[1,{"b":[]}]}', 4),
        (b'["[[[[", "{{{{"]', 1),
        (b'["\\"[[[", 1]', 1),  # an escaped quote does not end the string
        (b'["\\\\", [[]]]', 3),  # an escaped backslash does
        (b"[" * 5 + b"]" * 5, 5),
        (b"[][][]", 1),
    ],
)
def test_nesting_depth_skips_strings(data: bytes, depth: int) -> None:
    assert nesting_depth(data) == depth


def test_nesting_depth_never_undercounts_a_broken_string() -> None:
    # An unterminated string: the brackets after it are counted (a decoder stops there).
    assert nesting_depth(b'["abc' + b"[" * 50) >= 1
    assert nesting_depth(b"[" * 50 + b'"') == 50


def test_too_deep_at_the_limit_and_past_it() -> None:
    assert not too_deep(b"[" * MAX_NESTING + b"]" * MAX_NESTING)
    assert too_deep(b"[" * (MAX_NESTING + 1) + b"]" * (MAX_NESTING + 1))
    assert too_deep(b"[" * 5000)  # unclosed: still rejected
    # Many brackets, shallow: the exact scan runs and accepts.
    wide = json.dumps([{"a": [i]} for i in range(500)]).encode()
    assert not too_deep(wide)
    # Brackets only inside strings: accepted.
    assert not too_deep(json.dumps(["[" * 1000, "{" * 1000]).encode())
    assert too_deep(b"[[[", limit=2)


# ---------------------------------------------------------------------------- admission
def test_admit_a_plain_task() -> None:
    env = _env(reply_to=resp_subject(CLIENT, TASK_ID), enqueued_at=datetime.now(UTC))
    got = admit_envelope(encoder.encode(env), "TASKS.mail.send")
    assert isinstance(got, TaskEnvelope)
    assert got.id == TASK_ID


def test_admit_rejects_deep_nesting_before_decoding() -> None:
    payload = b"[" * 3000 + b"]" * 3000
    raw = b'{"id":"a","name":"mail.send","payload":' + payload + b"}"
    got = admit_envelope(raw, "TASKS.mail.send")
    assert isinstance(got, TaskError)
    assert (got.kind, got.retryable) == ("invalid", False)
    assert f"deeper than {MAX_NESTING}" in got.message


@pytest.mark.parametrize(
    "raw", [b"\x00garbage", b'{"id": "x", "name": ', b'{"name": "f.x"}', b'{"id": 5, "name": []}']
)
def test_admit_reports_undecodable_bytes_as_decode(raw: bytes) -> None:
    got = admit_envelope(raw, "TASKS.f.x")
    assert isinstance(got, TaskError)
    assert got.kind == "decode"
    assert got.message.startswith("task envelope is not valid")


def test_admit_turns_any_decoder_exception_into_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    import ebind.validate as validate

    def boom(data: bytes) -> TaskEnvelope:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(validate, "decode_envelope", boom)
    got = admit_envelope(b"{}", "TASKS.x")
    assert isinstance(got, TaskError)
    assert got.kind == "invalid"
    assert "RecursionError" in got.message


def test_admit_rejects_a_naive_deadline_on_the_wire() -> None:
    raw = b'{"id":"a","name":"mail.send","deadline":"2030-01-01T00:00:00"}'
    got = admit_envelope(raw, "TASKS.mail.send")
    assert isinstance(got, TaskError)
    assert got.kind == "invalid"
    assert "deadline" in got.message and "time zone" in got.message


# ---------------------------------------------------------------------------- ids
@pytest.mark.parametrize(
    "task_id", [TASK_ID, "a", "x" * 128, "report-17", "user_task-id", "nightly-2026-12-01"]
)
def test_plain_task_ids_that_are_valid(task_id: str) -> None:
    assert _problem(_env(id=task_id)) is None


@pytest.mark.parametrize(
    ("task_id", "needle"),
    [
        ("", "empty"),
        ("a.b", "'.'"),
        ("a b", "' '"),
        ("*", "'*'"),
        (">", "'>'"),
        ("x" * 129, "limit is 128"),
        ("dag:step", "':'"),  # a step id without dag_id/step_id fields
    ],
)
def test_plain_task_ids_that_are_rejected(task_id: str, needle: str) -> None:
    problem = _problem(_env(id=task_id))
    assert problem is not None and needle in problem


def test_dag_step_ids() -> None:
    ok = _env(id="d1:s1", dag_id="d1", step_id="s1")
    assert _problem(ok) is None
    cases = [
        (_env(id="d1:s1", dag_id="d1"), "set together"),
        (_env(id="d1:s1", step_id="s1"), "set together"),
        (_env(id="d.1:s1", dag_id="d.1", step_id="s1"), "dag_id"),
        (_env(id="d1:s 1", dag_id="d1", step_id="s 1"), "step_id"),
        (_env(id="d1:s2", dag_id="d1", step_id="s1"), "'<dag_id>:<step_id>'"),
        (_env(id="other", dag_id="d1", step_id="s1"), "'<dag_id>:<step_id>'"),
    ]
    for env, needle in cases:
        problem = _problem(env)
        assert problem is not None and needle in problem, (env, problem)


def test_a_periodic_schedule_body_is_valid() -> None:
    # plan_schedule stores id=<schedule name>, no reply_to; the worker renames firings after.
    from ebind.periodic import plan_schedule
    from ebind.registry import Registry

    plan = plan_schedule(Registry(), "nightly-report", "reports.build", every=60.0)
    env = msgspec.json.decode(plan.data, type=TaskEnvelope)
    assert envelope_problem(env, plan.headers["Nats-Schedule-Target"]) is None


# ---------------------------------------------------------------------------- name / subject
@pytest.mark.parametrize(
    ("name", "needle"),
    [("mail send", "' '"), ("mail..send", "empty part"), ("", "non-empty"), ("a.*", "'*'")],
)
def test_bad_task_names(name: str, needle: str) -> None:
    problem = envelope_problem(_env(name=name), "TASKS.x")
    assert problem is not None and needle in problem


def test_name_must_match_the_subject() -> None:
    problem = envelope_problem(_env(name="mail.send"), "TASKS.billing.charge")
    assert problem is not None
    assert "'TASKS.billing.charge'" in problem and "'TASKS.mail.send'" in problem


def test_target_must_match_the_subject() -> None:
    env = _env(target="gpu-1")
    assert envelope_problem(env, f"TASKS_TARGET.{b64_token('gpu-1')}.mail.send") is None
    for subject in (
        f"TASKS_TARGET.{b64_token('gpu-2')}.mail.send",
        "TASKS.mail.send",
        f"TASKS_TARGET.{b64_token('gpu-1')}.other",
    ):
        assert envelope_problem(env, subject) is not None, subject
    # An untargeted envelope arriving on a targeted subject
    untargeted = envelope_problem(_env(), f"TASKS_TARGET.{b64_token('gpu-1')}.mail.send")
    assert untargeted is not None


def test_blank_or_oversized_target() -> None:
    for target, needle in ((" ", "non-empty"), ("t" * 600, "limit is 512")):
        env = _env(target=target)
        problem = envelope_problem(env, task_subject(env.name, target))
        assert problem is not None and needle in problem


# ---------------------------------------------------------------------------- reply_to
def test_reply_to_may_be_empty_or_the_tasks_own_response_subject() -> None:
    assert _problem(_env(reply_to="")) is None
    assert _problem(_env(reply_to=resp_subject(CLIENT, TASK_ID))) is None
    assert _problem(_env(reply_to=resp_subject("worker-a_1", TASK_ID))) is None


@pytest.mark.parametrize(
    "reply_to",
    [
        "$KV.ebind-leases.scheduler",
        "$KV.ebind-dags.d1.meta",
        f"RESP.{CLIENT}.other-task",  # another task's result
        f"RESP.{CLIENT}",
        f"RESP..{TASK_ID}",
        f"RESP.*.{TASK_ID}",
        f"RESP.>.{TASK_ID}",
        f"RESP.a.b.{TASK_ID}",  # client id with a dot: an extra token
        f"RESP.{'c' * 129}.{TASK_ID}",
        f"TASKS.mail.send.{TASK_ID}",
        f"resp.{CLIENT}.{TASK_ID}",
        f"DLQ.{CLIENT}.{TASK_ID}",
        f"$JS.API.STREAM.PURGE.EBIND_TASKS.{TASK_ID}",
        f"_INBOX.{CLIENT}.{TASK_ID}",
        f"RESP.{TASK_ID}",
    ],
)
def test_reply_to_anywhere_else_is_rejected(reply_to: str) -> None:
    problem = _problem(_env(reply_to=reply_to))
    assert problem is not None
    assert "reply_to" in problem


# ---------------------------------------------------------------------------- times
def test_times_must_carry_a_time_zone() -> None:
    naive = datetime(2030, 1, 1)
    assert "deadline" in (_problem(_env(deadline=naive)) or "")
    assert "enqueued_at" in (_problem(_env(enqueued_at=naive)) or "")
    plus2 = timezone(timedelta(hours=2))
    assert _problem(_env(deadline=datetime(2030, 1, 1, tzinfo=plus2))) is None
    assert _problem(_env(enqueued_at=datetime.now(UTC))) is None


# ---------------------------------------------------------------------------- timeout
@pytest.mark.parametrize("timeout", [0.0, -1.0, float("inf"), float("nan"), float("-inf")])
def test_bad_timeouts(timeout: float) -> None:
    problem = _problem(_env(timeout=timeout))
    assert problem is not None and "timeout" in problem


@pytest.mark.parametrize("timeout", [None, 0.001, 30.0, 86400.0])
def test_good_timeouts(timeout: float | None) -> None:
    assert _problem(_env(timeout=timeout)) is None


def test_infinite_timeout_from_the_wire() -> None:
    raw = b'{"id":"a","name":"mail.send","timeout":1e400}'
    got = admit_envelope(raw, "TASKS.mail.send")
    assert isinstance(got, TaskError) and "timeout" in got.message


# ---------------------------------------------------------------------------- trace_ctx
def test_trace_ctx_bounds() -> None:
    ok = {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "ebind-gen": "3"}
    assert _problem(_env(trace_ctx=ok)) is None
    at_limit = {f"k{i}": "v" for i in range(MAX_TRACE_ENTRIES)}
    assert _problem(_env(trace_ctx=at_limit)) is None
    too_many = {f"k{i}": "v" for i in range(MAX_TRACE_ENTRIES + 1)}
    assert "entries" in (_problem(_env(trace_ctx=too_many)) or "")
    assert "key" in (_problem(_env(trace_ctx={"k" * (MAX_TRACE_KEY + 1): "v"})) or "")
    assert "key" in (_problem(_env(trace_ctx={"": "v"})) or "")
    long_value = {"tracestate": "v" * (MAX_TRACE_VALUE + 1)}
    assert "tracestate" in (_problem(_env(trace_ctx=long_value)) or "")


def test_a_dag_step_envelope_as_the_engine_builds_it_is_valid() -> None:
    env = _env(
        id="nightly-2026-12-01:fetch",
        name="etl.fetch",
        dag_id="nightly-2026-12-01",
        step_id="fetch",
        target="gpu",
        enqueued_at=datetime.now(UTC),
        timeout=30.0,
        trace_ctx={"ebind-generation": "12"},
    )
    assert envelope_problem(env, task_subject("etl.fetch", "gpu")) is None


# ---------------------------------------------------------------------------- futures
def test_check_future_ids() -> None:
    check_future_ids(TASK_ID, None)
    check_future_ids(TASK_ID, CLIENT)
    for task_id, client_id in (("*", None), (TASK_ID, "*"), ("a.b", None), (TASK_ID, ">")):
        with pytest.raises(InvalidName):
            check_future_ids(task_id, client_id)


# ---------------------------------------------------------------------------- DAG events
def _event(**fields: Any) -> Event:
    base: dict[str, Any] = {"kind": EventKind.COMPLETED, "dag_id": "d1", "step_id": "s1"}
    base.update(fields)
    return Event(**base)


def test_valid_events_pass() -> None:
    for ev in (
        _event(),
        _event(kind=EventKind.SUBMITTED, step_id=""),
        _event(kind=EventKind.SIGNAL, step_id="", signal_name="approve it"),
    ):
        got = admit_event(marshal_event(ev), event_subject(ev))
        assert got == ev


def test_events_with_bad_ids_or_subjects_are_invalid() -> None:
    cases = [
        (_event(dag_id="d.1"), "DAG.d1.completed.s1", "dag_id"),
        (_event(step_id="s*"), "DAG.d1.completed.s1", "step_id"),
        (_event(), "DAG.d2.completed.s1", "belongs under 'DAG.d1.completed.'"),
        (_event(), "DAG.d1.resumed.s1", "belongs under"),
        (_event(), "DAG.d1.completed", "belongs under"),
        (_event(), "DAG.d1.completed.s1.extra", "belongs under"),
    ]
    for ev, subject, needle in cases:
        problem = event_problem(ev, subject)
        assert problem is not None and needle in problem, (ev, problem)
        got = admit_event(marshal_event(ev), subject)
        assert isinstance(got, TaskError) and got.kind == "invalid"


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe",
        b'{"kind":"nope","dag_id":"d1"}',
        b'{"kind":"completed","dag_id":"d1","bp_labels":' + b"[" * 4000 + b"]" * 4000 + b"}",
    ],
)
def test_undecodable_or_deep_events_are_invalid(raw: bytes) -> None:
    got = admit_event(raw, "DAG.d1.completed.s1")
    assert isinstance(got, TaskError)
    assert (got.kind, got.retryable) == ("invalid", False)


# ---------------------------------------------------------------------------- depth vs a model
def _reference_depth(data: bytes) -> int:
    """A character-by-character JSON scanner: the model the fast scan must agree with."""
    depth = best = 0
    in_string = escaped = False
    for ch in data.decode():
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab\n', max_size=6),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(alphabet='[]{}"\\k', max_size=4), inner, max_size=3)
    ),
    max_leaves=40,
)


@given(_json_values, st.integers(min_value=0, max_value=8))
def test_fast_depth_scan_matches_a_character_scanner(value: Any, limit: int) -> None:
    data = json.dumps(value).encode()
    depth = _reference_depth(data)
    assert nesting_depth(data) == depth
    assert too_deep(data, limit) == (depth > limit)
