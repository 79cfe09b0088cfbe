"""Wire types round-trip with the seed's JSON field names."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from ebind.retry import RetryPolicy
from ebind.wire import (
    DLQEntry,
    TaskEnvelope,
    TaskError,
    TaskResponse,
    decode_envelope,
    decode_response,
    encoder,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_envelope_round_trip_with_every_field() -> None:
    env = TaskEnvelope(
        id="t1",
        name="img.resize",
        payload=msgspec.Raw(b'["a",1]'),
        reply_to="RESP.c.t1",
        deadline=T0,
        enqueued_at=T0,
        trace_ctx={"k": "v"},
        dag_id="d",
        step_id="s",
        retry_policy=RetryPolicy(maximum_attempts=3),
        target="gpu",
        timeout=2.5,
    )
    back = decode_envelope(encoder.encode(env))
    assert msgspec.structs.asdict(back) | {"payload": None} == msgspec.structs.asdict(env) | {
        "payload": None
    }
    assert bytes(back.payload) == b'["a",1]'


def test_envelope_uses_seed_field_names_and_omits_defaults() -> None:
    encoded = encoder.encode(TaskEnvelope(id="t", name="n", enqueued_at=T0))
    data = msgspec.json.decode(encoded)
    # An empty payload is omitted; decoders (and the Go worker) read "no payload" as [].
    assert data == {"id": "t", "name": "n", "enqueued_at": "2026-01-02T03:04:05Z"}
    assert bytes(decode_envelope(encoded).payload) == b"[]"


def test_seed_envelope_sample_decodes() -> None:
    raw = (
        b'{"id":"d1:s1","name":"main.Greet","payload":["x"],"deadline":"0001-01-01T00:00:00Z",'
        b'"enqueued_at":"2026-01-02T03:04:05Z","attempt":0,"dag_id":"d1","step_id":"s1",'
        b'"retry_policy":{"initial_interval":1.0,"backoff_coefficient":2.0,'
        b'"maximum_interval":60.0,"maximum_attempts":5},"unknown_field":1}'
    )
    env = decode_envelope(raw)
    assert (env.id, env.dag_id, env.step_id) == ("d1:s1", "d1", "s1")
    assert env.retry_policy == RetryPolicy()


def test_response_round_trip_with_result() -> None:
    resp = TaskResponse(task_id="t", result=msgspec.Raw(b"5"), attempts=1, completed_at=T0)
    back = decode_response(encoder.encode(resp))
    assert back.result is not None and bytes(back.result) == b"5"
    assert (back.task_id, back.attempts, back.completed_at, back.error) == ("t", 1, T0, None)


def test_response_round_trip_with_error_and_no_result() -> None:
    err = TaskError(kind="handler", message="boom", retryable=True)
    back = decode_response(encoder.encode(TaskResponse(task_id="t", error=err)))
    assert back.result is None and back.error == err
    assert str(err) == "handler: boom"


def test_response_with_null_result_keeps_the_null() -> None:
    back = decode_response(b'{"task_id":"t","result":null}')
    assert back.result is not None and bytes(back.result) == b"null"


def test_dlq_entry_round_trip() -> None:
    entry = DLQEntry(
        error=TaskError(kind="decode", message="bad"),
        final_attempt=1,
        dead_lettered_at=T0,
        raw=b"\x00garbage",
        subject="TASKS.x",
    )
    back = msgspec.json.decode(encoder.encode(entry), type=DLQEntry)
    assert back == entry
