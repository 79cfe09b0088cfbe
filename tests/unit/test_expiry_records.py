"""The expirer's pure decisions, and how publish/lookup errors are named for the caller."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from nats.js.errors import APIError

from ebind.client import expired_message, is_stream_full
from ebind.expirer import (
    EXPIRED_SUBJECTS,
    expiry_for,
    reply_subject,
    was_delivered,
)
from ebind.signing import HEADER_SIGNATURE, Signer
from ebind.streams import subject_matches
from ebind.wire import TaskEnvelope, decode_response, encoder

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LATE = T0 + timedelta(seconds=61)


def _env(**fields: object) -> TaskEnvelope:
    base: dict[str, object] = {"id": "t1", "name": "mail.send", "reply_to": "RESP.client1.t1"}
    base.update(fields)
    return TaskEnvelope(**base)  # type: ignore[arg-type]


def test_queued_subjects_only_schedules_are_never_expired() -> None:
    assert EXPIRED_SUBJECTS == ("TASKS.>", "TASKS_TARGET.>", "TASKQ.>")


def test_reply_goes_only_to_the_tasks_own_response_subject() -> None:
    assert reply_subject(_env()) == "RESP.client1.t1"


@pytest.mark.parametrize(
    "reply_to",
    [
        "",
        "RESP.client1.other",  # another task's response
        "$KV.ebind-leases.scheduler",  # an ebind record
        "RESP.client1.t1.extra",
        "RESP.*.t1",
        "RESP.bad client.t1",
        "DLQ.client1.t1",
        "RESP..t1",
    ],
)
def test_reply_elsewhere_is_refused(reply_to: str) -> None:
    assert reply_subject(_env(reply_to=reply_to)) is None


def test_a_task_id_that_is_not_an_id_gets_no_reply() -> None:
    assert reply_subject(_env(id="a b", reply_to="RESP.client1.a b")) is None


def test_young_messages_are_left_alone() -> None:
    data = encoder.encode(_env())
    assert expiry_for("TASKS.mail.send", 5, data, T0, 60.0, T0 + timedelta(seconds=59)) is None


def test_an_expired_task_gets_a_dead_letter_a_shared_msg_id_and_a_reply() -> None:
    data = encoder.encode(_env())
    got = expiry_for("TASKS.mail.send", 5, data, T0, 60.0, LATE)
    assert got is not None
    assert got.dlq_subject == "DLQ.mail.send"
    assert got.msg_id == "TASKS.mail.send:5:dlq"  # the worker's dead letter uses the same
    assert got.entry.error.kind == "expired" and not got.entry.error.retryable
    assert got.entry.raw == data and got.entry.subject == "TASKS.mail.send"
    assert got.entry.task is not None and got.entry.task.id == "t1"
    assert got.entry.dead_lettered_at == LATE
    assert got.reply_to == "RESP.client1.t1"
    assert got.response is not None
    resp = decode_response(encoder.encode(got.response))
    assert resp.task_id == "t1" and resp.error == got.entry.error


def test_a_targeted_task_names_its_dead_letter_after_the_task() -> None:
    data = encoder.encode(_env(target="gpu-7"))
    got = expiry_for("TASKS_TARGET.Z3B1LTc.mail.send", 9, data, T0, 60.0, LATE)
    assert got is not None and got.dlq_subject == "DLQ.mail.send"


def test_fire_and_forget_tasks_are_dead_lettered_without_a_reply() -> None:
    got = expiry_for("TASKS.mail.send", 5, encoder.encode(_env(reply_to="")), T0, 60.0, LATE)
    assert got is not None and got.reply_to is None and got.response is None


def test_a_forged_reply_subject_is_dead_lettered_but_never_answered() -> None:
    forged = encoder.encode(_env(reply_to="$KV.ebind-leases.scheduler"))
    got = expiry_for("TASKS.mail.send", 5, forged, T0, 60.0, LATE)
    assert got is not None and got.reply_to is None and got.response is None


@pytest.mark.parametrize(
    ("subject", "name"),
    [
        ("TASKS.mail.send", "mail.send"),
        ("TASKS_TARGET.Z3B1.a.b", "a.b"),
        ("TASKQ.billing.high.a.b", "a.b"),
        ("TASKS.", "_undecodable"),
    ],
)
def test_undecodable_bytes_are_kept_as_they_are(subject: str, name: str) -> None:
    got = expiry_for(subject, 3, b"\xff not json", T0, 60.0, LATE)
    assert got is not None
    assert got.entry.task is None and got.entry.raw == b"\xff not json"
    assert got.dlq_subject == f"DLQ.{name}"
    assert got.reply_to is None and got.response is None
    assert msgspec.json.decode(encoder.encode(got.entry))["error"]["kind"] == "expired"


def test_with_a_signer_an_unsigned_message_is_kept_raw_and_never_answered() -> None:
    signer = Signer([b"k" * 32])
    data = encoder.encode(_env(name="rev.pay"))
    got = expiry_for("TASKS.rev.nobody", 4, data, T0, 60.0, LATE, signer=signer)
    assert got is not None and got.entry.task is None and got.entry.raw == data
    assert got.dlq_subject == "DLQ.rev.nobody"  # the subject's name, not the body's
    assert got.reply_to is None and got.response is None
    assert "raw bytes only (unsigned)" in got.entry.error.message
    signed = {HEADER_SIGNATURE: signer.sign("TASKS.mail.send", encoder.encode(_env()))}
    ok = expiry_for(
        "TASKS.mail.send", 5, encoder.encode(_env()), T0, 60.0, LATE, headers=signed, signer=signer
    )
    assert ok is not None and ok.entry.task is not None and ok.reply_to == "RESP.client1.t1"


def test_a_body_naming_another_task_than_its_subject_is_kept_raw() -> None:
    got = expiry_for("TASKS.rev.nobody", 4, encoder.encode(_env(name="rev.pay")), T0, 60.0, LATE)
    assert got is not None and got.entry.task is None and got.dlq_subject == "DLQ.rev.nobody"
    assert got.reply_to is None and "raw bytes only (invalid)" in got.entry.error.message


def test_an_envelope_with_a_bad_name_is_filed_under_its_subject() -> None:
    got = expiry_for("TASKS.mail.send", 3, encoder.encode(_env(name="x y")), T0, 60.0, LATE)
    assert got is not None and got.dlq_subject == "DLQ.mail.send"


def test_stream_full_is_the_store_failure_with_a_maximum_reached() -> None:
    assert is_stream_full(APIError(err_code=10077, description="maximum messages exceeded"))
    assert is_stream_full(APIError(err_code=10077, description="maximum bytes exceeded"))
    assert not is_stream_full(APIError(err_code=10077, description="disk I/O error"))
    assert not is_stream_full(APIError(err_code=10060, description="maximum messages exceeded"))
    assert not is_stream_full(TimeoutError())


def test_expired_result_message_names_the_task_and_the_reason() -> None:
    assert "outlived the results retention" in expired_message("t1", "MaxAge")
    assert "t1" in expired_message("t1", "MaxAge")
    assert "(Purge)" in expired_message("t1", "Purge")


@pytest.mark.parametrize(
    ("filter_subject", "subject", "match"),
    [
        ("TASKS.>", "TASKS.mail.send", True),
        ("TASKS.>", "TASKS", False),
        ("TASKS.>", "TASKS_TARGET.x.mail", False),
        ("TASKS_TARGET.Z3B1.>", "TASKS_TARGET.Z3B1.mail.send", True),
        ("TASKS_TARGET.Z3B1.>", "TASKS_TARGET.other.mail.send", False),
        ("TASKS.*.send", "TASKS.mail.send", True),
        ("TASKS.*.send", "TASKS.mail.send.now", False),
        ("TASKS.mail", "TASKS.mail", True),
        ("TASKS.mail", "TASKS.mail.send", False),
        (">", "TASKS.mail", True),
    ],
)
def test_subject_matches_nats_wildcards(filter_subject: str, subject: str, match: bool) -> None:
    assert subject_matches(filter_subject, subject) is match


def test_delivered_means_a_matching_consumer_got_past_that_sequence() -> None:
    consumers = [(("TASKS.>",), 10), (("TASKS_TARGET.Z3B1.>",), 3)]
    assert was_delivered(consumers, "TASKS.mail.send", 10)
    assert not was_delivered(consumers, "TASKS.mail.send", 11)
    assert was_delivered(consumers, "TASKS_TARGET.Z3B1.mail", 3)
    assert not was_delivered(consumers, "TASKS_TARGET.Z3B1.mail", 4)
    assert not was_delivered(consumers, "TASKS_TARGET.nobody.mail", 1)
    assert not was_delivered([], "TASKS.mail.send", 1)


def test_a_message_a_worker_holds_gets_half_the_grace_more() -> None:
    data = encoder.encode(_env())
    # horizon 60 s: grace 15 s, so a held message expires 7.5 s later than a waiting one
    at_61 = T0 + timedelta(seconds=61)
    assert expiry_for("TASKS.mail.send", 5, data, T0, 60.0, at_61, delivered=True) is None
    at_68 = T0 + timedelta(seconds=67.5)
    held = expiry_for("TASKS.mail.send", 5, data, T0, 60.0, at_68, delivered=True)
    assert held is not None and "horizon of 60s" in held.entry.error.message


def test_a_server_refusal_is_reported_as_not_stored_a_timeout_as_unknown() -> None:
    from ebind.client import _task_failure
    from ebind.wire import TaskEnvelope as Env

    env = Env(id="t1", name="mail.send")
    refused = _task_failure(env, "TASKS.mail.send", APIError(code=400, description="bad"), 5.0)
    assert "refused by the server: bad; nothing was stored" in str(refused)
    assert not refused.maybe_stored
    unknown = _task_failure(env, "TASKS.mail.send", TimeoutError(), 5.0)
    assert "may or may not be stored" in str(unknown) and unknown.maybe_stored
    no_leader = _task_failure(env, "TASKS.mail.send", APIError(code=503, description="x"), 5.0)
    assert no_leader.maybe_stored
