"""``ebind dag ls --since``: durations and ISO times, and the errors for anything else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
import pytest

from ebind.cli.output import parse_since

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "ago"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("1.5h", timedelta(minutes=90)),
        ("7d", timedelta(days=7)),
        ("1w", timedelta(weeks=1)),
        (" 2h ", timedelta(hours=2)),
    ],
)
def test_durations_count_back_from_now(text: str, ago: timedelta) -> None:
    assert parse_since(text, NOW) == NOW - ago


def test_iso_times_are_taken_as_given_and_naive_ones_as_utc() -> None:
    assert parse_since("2026-11-24T09:30:00Z", NOW) == datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
    assert parse_since("2026-11-24T09:30:00", NOW) == datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
    at = parse_since("2026-11-24T10:30:00+01:00", NOW)
    assert at == datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "text", ["", "h", "-2h", "2x", "yesterday", "2h30m", "1e3s", "1M", "2H", "2h ago"]
)
def test_anything_else_is_refused_with_both_accepted_forms_named(text: str) -> None:
    with pytest.raises(click.BadParameter, match=r"30s, 15m, 2h, 7d, 1w.*ISO time"):
        parse_since(text, NOW)


def test_a_time_in_the_future_is_refused() -> None:
    with pytest.raises(click.BadParameter, match="in the future"):
        parse_since("2026-11-25T00:00:00Z", NOW)


def test_a_duration_beyond_the_calendar_is_refused_not_a_traceback() -> None:
    with pytest.raises(click.BadParameter, match="reaches back too far"):
        parse_since("9999999d", NOW)


@pytest.mark.parametrize("value", ["\u00b2s", "1\u00b2m", "\u0663h"])
def test_digits_int_refuses_are_a_bad_parameter(value: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_since(value)


def test_printable_shows_control_characters_and_keeps_only_its_own_colours() -> None:
    from ebind._printable import Styled
    from ebind.cli.output import printable

    hostile = "host\x1b]0;owned\x07\x1b[2J\r\n\x9b1m"
    assert printable(hostile) == "host?]0;owned??[2J???1m"
    # A colour code in a record's text is shown as "?"; text ebind styled keeps its codes.
    coloured = click.style("failed", fg="red")
    assert printable(coloured) == "?[31mfailed?[0m"
    assert printable(Styled(coloured)) == coloured
    assert printable("plain – ünicode") == "plain – ünicode"
