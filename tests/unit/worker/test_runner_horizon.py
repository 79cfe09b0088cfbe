"""When a delivery became ready, read from its ack subject (the stream's own timestamp)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from ebind.worker.runner import stream_time

_TS = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123456789Z in nanoseconds


@dataclass
class _Msg:
    reply: str | None


def test_stream_time_from_a_plain_ack_subject() -> None:
    msg = _Msg(f"$JS.ACK.EBIND_TASKS.ebind-worker.3.42.40.{_TS}.0")
    assert stream_time(msg) == datetime(2026, 1, 1, 0, 0, 0, 123457, tzinfo=UTC)


def test_stream_time_from_a_domain_ack_subject() -> None:
    msg = _Msg(f"$JS.ACK.hub.ACCHASH.EBIND_TASKS.ebind-worker.1.42.40.{_TS}.0.rand")
    assert stream_time(msg) == datetime(2026, 1, 1, 0, 0, 0, 123457, tzinfo=UTC)


def test_no_usable_timestamp_means_none() -> None:
    assert stream_time(_Msg(None)) is None
    assert stream_time(_Msg("_INBOX.abc")) is None
    assert stream_time(_Msg("$JS.ACK.S.C.1.2.3.notanumber.0")) is None
    assert stream_time(_Msg("$JS.ACK.S.C.1.2.3.0.0")) is None
