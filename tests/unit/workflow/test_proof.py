"""The pure proof of a DAG step delivery: dispatch digest, generation parsing, verdict."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from ebind.retry import RetryPolicy
from ebind.wire import TaskEnvelope, decode_envelope, encoder
from ebind.workflow.proof import (
    GENERATION_KEY,
    StepVerdict,
    dispatch_digest,
    envelope_generation,
    step_verdict,
)
from ebind.workflow.types import DAGStatus, StepRecord, StepStatus

V = StepVerdict


def _env(**over: Any) -> TaskEnvelope:
    base: dict[str, Any] = {
        "id": "d:s",
        "name": "wf.add",
        "payload": msgspec.Raw(b"[1,2]"),
        "dag_id": "d",
        "step_id": "s",
        "retry_policy": RetryPolicy(maximum_attempts=3, initial_interval=0.5),
        "target": "gpu",
        "timeout": 2.5,
        "trace_ctx": {GENERATION_KEY: "7"},
    }
    base.update(over)
    return TaskEnvelope(**base)


DIGEST = dispatch_digest(_env())


def _rec(status: StepStatus = StepStatus.RUNNING, **over: Any) -> StepRecord:
    fields: dict[str, Any] = {"generation": 7, "dispatch_digest": DIGEST}
    fields.update(over)
    return StepRecord(dag_id="d", step_id="s", fn_name="wf.add", status=status, **fields)


# -- dispatch_digest -------------------------------------------------------------------


def test_the_digest_survives_the_trip_through_the_wire() -> None:
    env = _env(enqueued_at=datetime(2026, 1, 2, tzinfo=UTC))
    seen = decode_envelope(encoder.encode(env))
    assert dispatch_digest(seen) == dispatch_digest(env) == DIGEST


@pytest.mark.parametrize(
    "change",
    [
        {"id": "d:t"},
        {"name": "wf.other"},
        {"payload": msgspec.Raw(b"[1,3]")},
        {"payload": msgspec.Raw(b"[1, 2]")},  # same value, other bytes: not what was sent
        {"reply_to": "RESP.c.d:s"},
        {"deadline": datetime(2030, 1, 1, tzinfo=UTC)},
        {"dag_id": "e"},
        {"step_id": "t"},
        {"retry_policy": RetryPolicy(maximum_attempts=4, initial_interval=0.5)},
        {"retry_policy": None},
        {"target": ""},
        {"timeout": 2.6},
        {"timeout": None},
        {"trace_ctx": {GENERATION_KEY: "8"}},
        {"trace_ctx": {}},
    ],
    ids=lambda c: ",".join(c),
)
def test_every_field_that_decides_the_run_changes_the_digest(change: dict[str, Any]) -> None:
    assert dispatch_digest(_env(**change)) != DIGEST


@pytest.mark.parametrize(
    "change",
    [
        {"attempt": 4},
        {"worker_id": "w9"},
        {"enqueued_at": datetime(2031, 1, 1, tzinfo=UTC)},
        {"trace_ctx": {GENERATION_KEY: "7", "traceparent": "00-ab-cd-01"}},
    ],
    ids=lambda c: ",".join(c),
)
def test_worker_filled_fields_resend_time_and_tracing_keys_leave_it_alone(
    change: dict[str, Any],
) -> None:
    assert dispatch_digest(_env(**change)) == DIGEST


# -- envelope_generation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("7", 7),
        ("0", 0),
        ("18446744073709551615", 18446744073709551615),
        (None, None),
        ("", None),
        ("-1", None),
        ("+1", None),
        (" 1", None),
        ("1.0", None),
        ("x", None),
        ("١٢", None),  # Arabic-Indic digits: int() would take them
        ("9" * 21, None),
        ("9" * 5000, None),  # int() would raise past the digit limit
    ],
)
def test_generation_is_a_plain_decimal_number(raw: str | None, want: int | None) -> None:
    ctx = {} if raw is None else {GENERATION_KEY: raw}
    assert envelope_generation(_env(trace_ctx=ctx)) == want


# -- step_verdict ----------------------------------------------------------------------

RUNNING = DAGStatus.RUNNING


def test_no_generation_is_unproven_whatever_the_record_says() -> None:
    for got in [None, (_rec(), 7), (_rec(StepStatus.DONE), 8)]:
        verdict, why = step_verdict(got, RUNNING, None, DIGEST)
        assert verdict is V.UNPROVEN and "no dispatch generation" in why


def test_a_missing_step_is_behind_while_its_dag_exists_else_orphan() -> None:
    assert step_verdict(None, RUNNING, 7, DIGEST) == (V.BEHIND, "")
    assert step_verdict(None, None, 7, DIGEST) == (V.ORPHAN, "")


@pytest.mark.parametrize(
    ("status", "want"),
    [
        (StepStatus.DONE, V.TERMINAL),
        (StepStatus.FAILED, V.TERMINAL),
        (StepStatus.CANCELED, V.TERMINAL),
        (StepStatus.RUNNING, V.STALE),
        (StepStatus.PENDING, V.STALE),
    ],
)
def test_a_generation_below_the_records_is_a_superseded_dispatch(
    status: StepStatus, want: StepVerdict
) -> None:
    rec = _rec(status, generation=9, dispatch_digest="other")
    assert step_verdict((rec, 12), DAGStatus.CANCELED, 7, "anything") == (want, "")


@pytest.mark.parametrize("meta", [RUNNING, DAGStatus.PAUSING, DAGStatus.PAUSED, None])
def test_the_dispatched_envelope_runs(meta: DAGStatus | None) -> None:
    # Running steps may finish while their DAG pauses.
    assert step_verdict((_rec(), 9), meta, 7, DIGEST) == (V.RUN, "")


def test_the_dispatched_envelope_of_a_canceled_dag_cancels_the_step() -> None:
    assert step_verdict((_rec(), 9), DAGStatus.CANCELED, 7, DIGEST) == (V.CANCELED, "")


@pytest.mark.parametrize("status", [StepStatus.DONE, StepStatus.FAILED, StepStatus.CANCELED])
def test_a_redelivery_of_a_finished_dispatch_is_terminal(status: StepStatus) -> None:
    assert step_verdict((_rec(status), 9), RUNNING, 7, DIGEST) == (V.TERMINAL, "")


@pytest.mark.parametrize("status", [StepStatus.RUNNING, StepStatus.DONE])
def test_other_bytes_at_the_dispatched_generation_are_unproven(status: StepStatus) -> None:
    verdict, why = step_verdict((_rec(status), 9), RUNNING, 7, "forged")
    assert verdict is V.UNPROVEN and "differs from the envelope dispatched" in why


def test_a_record_without_a_digest_proves_nothing() -> None:
    verdict, why = step_verdict((_rec(dispatch_digest=""), 9), RUNNING, 7, DIGEST)
    assert verdict is V.UNPROVEN and "no dispatch digest" in why


def test_a_pending_step_at_the_messages_generation_was_never_dispatched() -> None:
    # A never-dispatched step has generation 0: "0" must not pass as its dispatch.
    rec = _rec(StepStatus.PENDING, generation=0, dispatch_digest="")
    verdict, why = step_verdict((rec, 3), RUNNING, 0, DIGEST)
    assert verdict is V.UNPROVEN and "never dispatched" in why


def test_a_generation_the_record_has_not_reached_is_read_again() -> None:
    rec = _rec(StepStatus.PENDING, generation=0, dispatch_digest="")
    assert step_verdict((rec, 5), RUNNING, 7, DIGEST) == (V.BEHIND, "")


def test_a_generation_the_record_was_written_past_is_a_lost_dispatch() -> None:
    rec = _rec(StepStatus.PENDING, generation=0, dispatch_digest="", held=True)
    assert step_verdict((rec, 8), DAGStatus.PAUSED, 7, DIGEST) == (V.STALE, "")


@pytest.mark.parametrize("status", [StepStatus.PENDING, StepStatus.RUNNING])
def test_a_record_still_at_the_dispatch_revision_awaits_the_dispatch_write(
    status: StepStatus,
) -> None:
    rec = _rec(status, generation=3, dispatch_digest="older")
    assert step_verdict((rec, 7), RUNNING, 7, DIGEST) == (V.AWAIT, "")


def test_no_dispatch_starts_from_a_held_record() -> None:
    rec = _rec(StepStatus.PENDING, generation=0, dispatch_digest="", held=True)
    verdict, why = step_verdict((rec, 7), DAGStatus.PAUSED, 7, DIGEST)
    assert verdict is V.UNPROVEN and "held by a pause" in why


@pytest.mark.parametrize("status", [StepStatus.DONE, StepStatus.SKIPPED, StepStatus.CANCELED])
def test_no_dispatch_starts_from_a_finished_record(status: StepStatus) -> None:
    rec = _rec(status, generation=3, dispatch_digest="older")
    verdict, why = step_verdict((rec, 7), RUNNING, 7, DIGEST)
    assert verdict is V.UNPROVEN and f"step is {status.value}" in why
