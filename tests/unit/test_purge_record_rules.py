"""What a purge of EBIND_TASKS records for each task it removes (the pure part)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from nats.js.api import RawStreamMsg

from ebind.cli.tasks_purge import (
    RUNNING,
    PurgeReport,
    delivery_subject,
    purge_error,
    purge_record,
    render,
)
from ebind.expirer import expiry_for
from ebind.schedule import schedule_headers
from ebind.signing import HEADER_SIGNATURE, Signer
from ebind.wire import ErrorKind, TaskEnvelope, decode_response, encoder

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SIGNER = Signer(["unit-purge-signing-key-0123456789"])


def _data(**fields: object) -> bytes:
    base: dict[str, object] = {"id": "t1", "name": "mail.send", "reply_to": "RESP.client1.t1"}
    base.update(fields)
    return encoder.encode(TaskEnvelope(**base))  # type: ignore[arg-type]


def _msg(subject: str, data: bytes, headers: dict[str, str] | None = None) -> RawStreamMsg:
    return RawStreamMsg(subject=subject, seq=7, data=data, headers=headers)


def test_the_purge_error_is_its_own_kind_and_not_retryable() -> None:
    error = purge_error()
    assert error.kind == ErrorKind.PURGED.value == "purged" and not error.retryable


def test_a_queued_task_gets_a_dead_letter_an_own_msg_id_and_a_reply() -> None:
    data = _data()
    got = purge_record(_msg("TASKS.mail.send", data), NOW)
    assert got.dlq_subject == "DLQ.mail.send"
    assert got.msg_id == "TASKS.mail.send:7:purged"
    expired = expiry_for("TASKS.mail.send", 7, data, NOW, 0.0, NOW)
    assert expired is not None and expired.msg_id != got.msg_id  # neither swallows the other
    assert got.entry.error == purge_error() and got.entry.raw == data
    assert got.entry.task is not None and got.entry.task.id == "t1"
    assert got.entry.subject == "TASKS.mail.send" and got.entry.dead_lettered_at == NOW
    assert got.reply_to == "RESP.client1.t1" and got.response is not None
    resp = decode_response(encoder.encode(got.response))
    assert resp.task_id == "t1" and resp.error == purge_error()


@pytest.mark.parametrize(
    "data",
    [
        b"\xff not json",
        _data(name="other.task"),  # names another task than its subject
        _data(reply_to="$KV.ebind-leases.scheduler"),  # a reply subject of no waiter
    ],
)
def test_what_a_worker_would_refuse_is_kept_raw_or_unanswered(data: bytes) -> None:
    got = purge_record(_msg("TASKS.mail.send", data), NOW)
    assert got.entry.raw == data and got.entry.error.kind == "purged"
    assert got.reply_to is None and got.response is None


def test_a_signing_app_keeps_an_unsigned_task_as_raw_bytes_only() -> None:
    data = _data()
    got = purge_record(_msg("TASKS.mail.send", data), NOW, SIGNER)
    assert got.entry.task is None and got.entry.raw == data
    assert "kept as raw bytes only (unsigned)" in got.entry.error.message
    assert got.reply_to is None and got.response is None
    signed = {HEADER_SIGNATURE: SIGNER.sign("TASKS.mail.send", data)}
    ok = purge_record(_msg("TASKS.mail.send", data, signed), NOW, SIGNER)
    assert ok.entry.task is not None and ok.reply_to == "RESP.client1.t1"


def test_a_delayed_task_is_checked_on_its_schedule_target() -> None:
    data = _data()
    headers = schedule_headers(NOW, "TASKS.mail.send")
    headers[HEADER_SIGNATURE] = SIGNER.sign("TASKS.mail.send", data)
    got = purge_record(_msg("TASKS_SCHEDULED.t1", data, headers), NOW, SIGNER)
    assert got.entry.task is not None and got.entry.subject == "TASKS.mail.send"
    assert got.msg_id == "TASKS_SCHEDULED.t1:7:purged"
    assert got.reply_to == "RESP.client1.t1"


@pytest.mark.parametrize(
    ("subject", "headers", "expected"),
    [
        ("TASKS.a.b", None, "TASKS.a.b"),
        ("TASKQ.q.high.a", {"Nats-Schedule-Target": "TASKS.x"}, "TASKQ.q.high.a"),
        (
            "TASKS_SCHEDULED.t1",
            {"Nats-Schedule-Target": "TASKS_TARGET.Z3B1.a"},
            "TASKS_TARGET.Z3B1.a",
        ),
        ("TASKS_SCHEDULED.t1", {"Nats-Schedule-Target": "RESP.c.t1"}, "TASKS_SCHEDULED.t1"),
        ("TASKS_SCHEDULED.t1", {}, "TASKS_SCHEDULED.t1"),
        ("TASKS_SCHEDULED.t1", None, "TASKS_SCHEDULED.t1"),
    ],
)
def test_delivery_subject(subject: str, headers: dict[str, str] | None, expected: str) -> None:
    assert delivery_subject(subject, headers) == expected


def test_a_delayed_task_whose_target_is_no_task_subject_is_kept_raw() -> None:
    data = _data()
    got = purge_record(_msg("TASKS_SCHEDULED.t1", data, {"Nats-Schedule-Target": "RESP.x"}), NOW)
    assert got.entry.task is None and got.reply_to is None
    assert got.entry.subject == "TASKS_SCHEDULED.t1"


def test_the_report_says_how_many_were_dead_lettered_and_kept_running() -> None:
    report = PurgeReport(
        removed={"queued tasks": 3},
        kept={"delayed tasks": 0, "periodic schedules": 1, RUNNING: 2},
        dead_lettered=3,
    )
    assert render(report) == (
        "purged 3 queued tasks from EBIND_TASKS (3 dead-lettered as purged, see `ebind dlq "
        "ls`); kept 0 delayed tasks (--delayed removes them), 1 periodic schedules "
        "(--schedules removes them), 2 running tasks (a worker holds them)"
    )
    assert report.as_json()["dead_lettered"] == 3
    assert render(PurgeReport(removed={"queued tasks": 0}, kept={RUNNING: 0})) == (
        "purged 0 queued tasks from EBIND_TASKS"
    )
