"""The pure parts of progress: validation of reports and records, the rate limit, subjects."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from ebind.progress import (
    MAX_NOTE_LEN,
    MIN_INTERVAL,
    Progress,
    check_progress,
    client_of_reply,
    decode_progress,
    flush_delay,
    progress_subject,
)


@pytest.mark.parametrize("fraction", [0, 0.0, 0.4, 1, 1.0])
def test_fractions_in_the_unit_interval_are_accepted(fraction: float) -> None:
    assert check_progress(fraction, "n") == (float(fraction), "n")


@pytest.mark.parametrize("fraction", [-0.01, 1.01, float("nan"), float("inf"), -float("inf")])
def test_fractions_outside_the_unit_interval_are_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        check_progress(fraction, "")


@pytest.mark.parametrize("fraction", ["0.5", None, True, [0.5]])
def test_a_fraction_that_is_not_a_number_is_refused(fraction: object) -> None:
    with pytest.raises(TypeError, match="must be a number"):
        check_progress(fraction, "")


def test_notes_are_bounded_and_must_be_text() -> None:
    assert check_progress(0.5, "x" * MAX_NOTE_LEN)[1] == "x" * MAX_NOTE_LEN
    with pytest.raises(ValueError, match=f"at most {MAX_NOTE_LEN}"):
        check_progress(0.5, "x" * (MAX_NOTE_LEN + 1))
    with pytest.raises(TypeError, match="note must be a str"):
        check_progress(0.5, 3)


def test_the_first_write_goes_out_at_once_then_one_per_interval() -> None:
    assert flush_delay(100.0, None) == 0.0
    assert flush_delay(100.0, 100.0) == pytest.approx(MIN_INTERVAL)
    assert flush_delay(100.1, 100.0, interval=0.25) == pytest.approx(0.15)
    assert flush_delay(100.25, 100.0, interval=0.25) == 0.0
    assert flush_delay(200.0, 100.0) == 0.0


def test_records_go_to_the_client_of_the_reply_subject() -> None:
    assert client_of_reply("RESP.c1.t1") == "c1"
    assert client_of_reply("") == "_"
    assert client_of_reply("RESP..t1") == "_"
    assert client_of_reply("OTHER.c1.t1") == "_"
    assert progress_subject("c1", "t1") == "PROGRESS.c1.t1"
    assert progress_subject("", "t1") == "PROGRESS._.t1"


def _record(**fields: object) -> bytes:
    doc: dict[str, object] = {
        "task_id": "t1",
        "fraction": 0.5,
        "note": "n",
        "at": datetime.now(UTC),
    }
    doc.update(fields)
    return msgspec.json.encode(doc)


def test_a_valid_record_decodes() -> None:
    got = decode_progress(_record(), "t1")
    assert isinstance(got, Progress) and (got.fraction, got.note) == (0.5, "n")


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"{}",
        _record(fraction=2.0),
        _record(fraction="half"),
        _record(note="x" * (MAX_NOTE_LEN + 1)),
        _record(task_id="someone-else"),
        _record(at="yesterday"),
    ],
    # ids by name: a record's timestamp would make them differ per run (and per test worker)
    ids=[
        "not json",
        "empty",
        "fraction over 1",
        "fraction not a number",
        "long note",
        "other task",
        "bad time",
    ],
)
def test_invalid_or_foreign_records_read_as_none(data: bytes) -> None:
    assert decode_progress(data, "t1") is None


def test_task_get_describes_a_report_and_its_absence() -> None:
    from datetime import timedelta

    from ebind.cli.task_get import describe

    now = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)
    report = Progress(task_id="t1", fraction=0.4, note="copying", at=now - timedelta(seconds=3))
    text = describe("t1", report, now)
    assert text.startswith("task t1: 40% 'copying' (") and text.endswith(" ago)")
    assert "no progress reported" in describe("t1", None, now)
