"""fit_dead_letter: an entry too large for the server keeps its error and names what went."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import msgspec
import pytest

from ebind.dlq import fit_dead_letter
from ebind.wire import DLQEntry, TaskEnvelope, TaskError

_decode = msgspec.json.Decoder(DLQEntry).decode
AT = datetime(2026, 12, 3, tzinfo=UTC)


def _entry(*, raw: bytes = b"", payload: bytes = b"[]", message: str = "boom") -> DLQEntry:
    task = TaskEnvelope(id="t1", name="demo.big", payload=msgspec.Raw(payload))
    return DLQEntry(
        error=TaskError(kind="handler", message=message),
        final_attempt=3,
        dead_lettered_at=AT,
        task=task,
        raw=raw,
        subject="TASKS.demo.big",
    )


def test_an_entry_that_fits_is_unchanged() -> None:
    entry = _entry(raw=b"abc")
    data = fit_dead_letter(entry, 10_000)
    assert _decode(data) == entry


def test_raw_bytes_go_first_with_size_and_digest() -> None:
    raw = b"r" * 5_000
    entry = _entry(raw=raw)
    data = fit_dead_letter(entry, 2_000)
    got = _decode(data)
    assert len(data) <= 2_000
    assert got.raw == b"" and got.task == entry.task and got.error == entry.error
    assert got.left_out == (f"raw: 5000 bytes, sha256 {hashlib.sha256(raw).hexdigest()}",)


def test_a_header_block_goes_before_the_raw_bytes() -> None:
    hdrs = b"NATS/1.0\r\nX-Pad: " + b"h" * 3_000 + b"\r\n\r\n"
    entry = msgspec.structs.replace(_entry(raw=b"r" * 500), raw_headers=hdrs)
    got = _decode(fit_dead_letter(entry, 2_500))
    assert got.raw_headers == b"" and got.raw == entry.raw
    assert got.left_out == (
        f"raw_headers: {len(hdrs)} bytes, sha256 {hashlib.sha256(hdrs).hexdigest()}",
    )


def test_then_the_task_named_by_name_and_id() -> None:
    payload = b'["' + b"p" * 5_000 + b'"]'
    entry = _entry(raw=b"r" * 100, payload=payload)
    data = fit_dead_letter(entry, 1_000)
    got = _decode(data)
    assert len(data) <= 1_000
    assert got.task is None and got.raw == b""
    assert got.left_out[0].startswith("raw: 100 bytes")
    assert got.left_out[1].startswith("task demo.big t1: ")
    assert got.final_attempt == 3 and got.subject == "TASKS.demo.big" and got.dead_lettered_at == AT


def test_then_the_error_message_past_its_start() -> None:
    entry = _entry(message="m" * 50_000)
    data = fit_dead_letter(entry, 3_000)
    got = _decode(data)
    assert len(data) <= 3_000
    assert got.error.kind == "handler"
    assert got.error.message == "m" * 1_000 + "…"
    assert got.left_out[-1].startswith("error.message: 50000 bytes, sha256 ")


def test_parts_cut_before_are_kept_in_the_list() -> None:
    entry = msgspec.structs.replace(_entry(raw=b"x" * 3_000), left_out=("earlier: 1 bytes",))
    got = _decode(fit_dead_letter(entry, 1_000))
    assert got.left_out[0] == "earlier: 1 bytes"
    assert got.left_out[1].startswith("raw: 3000 bytes")


@pytest.mark.parametrize("room", [0, 50])
def test_a_room_smaller_than_the_bare_entry_still_gives_the_bare_entry(room: int) -> None:
    got = _decode(fit_dead_letter(_entry(raw=b"x" * 100, message="m" * 2_000), room))
    assert got.task is None and got.raw == b"" and len(got.error.message) == 1_001
