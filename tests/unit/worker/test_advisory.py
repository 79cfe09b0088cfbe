"""Max-deliveries advisories: parsing untrusted advisory bytes, and the dead letter built."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from ebind.signing import HEADER_SIGNATURE, Signer
from ebind.streams import DAG_EVENTS_STREAM, TASKS_STREAM, resp_subject
from ebind.wire import TaskEnvelope, encoder
from ebind.worker.advisory import MAX_ADVISORY_BYTES, Exhausted, exhausted_entry, parse_advisory

NOW = datetime(2026, 12, 2, tzinfo=UTC)


def _adv(**fields: object) -> bytes:
    base: dict[str, object] = {
        "type": "io.nats.jetstream.advisory.v1.max_deliver",
        "stream": TASKS_STREAM,
        "consumer": "ebind-worker",
        "stream_seq": 7,
        "deliveries": 5,
    }
    base.update(fields)
    return msgspec.json.encode(base)


def test_parse_a_server_advisory() -> None:
    assert parse_advisory(_adv()) == Exhausted(TASKS_STREAM, "ebind-worker", 7, 5)
    assert parse_advisory(_adv(stream=DAG_EVENTS_STREAM, consumer="ebind-scheduler")) is not None
    assert parse_advisory(_adv(consumer="ebind-targets-Z3B1")) is not None


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[" * 5000,
        _adv(stream="KV_ebind-leases"),  # not a stream ebind dead-letters from
        _adv(stream_seq=0),
        _adv(stream_seq=-3),
        _adv(stream_seq="7"),
        _adv(consumer=""),
        _adv(consumer="someone-elses-consumer"),
        b'{"stream":"EBIND_TASKS"}',
        b" " * (MAX_ADVISORY_BYTES + 1),
    ],
)
def test_anything_else_is_ignored(data: bytes) -> None:
    assert parse_advisory(data) is None


def test_a_valid_task_keeps_its_envelope_and_is_answered() -> None:
    env = TaskEnvelope(id="t1", name="mail.send", reply_to=resp_subject("c1", "t1"))
    raw = encoder.encode(env)
    ex = Exhausted(TASKS_STREAM, "ebind-worker", 7, 1000)
    name, entry, answer = exhausted_entry(ex, "TASKS.mail.send", raw, NOW)
    assert name == "mail.send"
    assert (entry.error.kind, entry.error.retryable) == ("max_deliveries", False)
    assert "1000 deliveries" in entry.error.message and "ebind-worker" in entry.error.message
    assert (entry.raw, entry.subject, entry.final_attempt) == (raw, "TASKS.mail.send", 1000)
    assert entry.task is not None and entry.task.attempt == 1000
    assert answer is not None and answer.reply_to == resp_subject("c1", "t1")


def test_an_invalid_task_keeps_only_its_bytes_and_nobody_is_answered() -> None:
    raw = msgspec.json.encode({"id": "t1", "name": "mail.send", "reply_to": "$KV.x.y"})
    ex = Exhausted(TASKS_STREAM, "ebind-targets-Z3B1", 9, 3)
    name, entry, answer = exhausted_entry(ex, "TASKS_TARGET.Z3B1.mail.send", raw, NOW)
    assert name == "mail.send"
    assert entry.task is None and entry.raw == raw
    assert answer is None


def test_with_a_signer_only_a_signed_task_is_kept_and_answered() -> None:
    signer = Signer([b"k" * 32])
    env = TaskEnvelope(id="t1", name="mail.send", reply_to=resp_subject("c1", "t1"))
    raw = encoder.encode(env)
    ex = Exhausted(TASKS_STREAM, "ebind-worker", 7, 5)
    signed = {HEADER_SIGNATURE: signer.sign("TASKS.mail.send", raw)}
    _, kept, answer = exhausted_entry(
        ex, "TASKS.mail.send", raw, NOW, headers=signed, signer=signer
    )
    assert kept.task is not None and answer is not None
    for headers in (None, {HEADER_SIGNATURE: Signer([b"o" * 32]).sign("TASKS.mail.send", raw)}):
        _, entry, answer = exhausted_entry(
            ex, "TASKS.mail.send", raw, NOW, headers=headers, signer=signer
        )
        assert entry.task is None and entry.raw == raw and answer is None


def test_a_dag_event_goes_to_the_event_dead_letters() -> None:
    ex = Exhausted(DAG_EVENTS_STREAM, "ebind-scheduler", 3, 1000)
    name, entry, answer = exhausted_entry(ex, "DAG.d1.completed.s1", b"{}", NOW)
    assert name == "_dag_event"
    assert entry.task is None and answer is None
