"""Cron as people write it: 7 = Sunday, names, the text kept, and next runs across DST."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from ebind.cron import parse_cron
from ebind.errors import InvalidArguments

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("expr", "sent", "weekdays"),
    [
        ("0 3 * * 7", "0 0 3 * * 0", {0}),
        ("0 3 * * 0", "0 0 3 * * 0", {0}),
        ("0 3 * * 5-7", "0 0 3 * * 0,5,6", {0, 5, 6}),
        ("0 3 * * 1,7", "0 0 3 * * 0,1", {0, 1}),
        ("0 3 * * sat-7", "0 0 3 * * 0,6", {0, 6}),
        ("0 3 * * 0-7", "0 0 3 * * 0,1,2,3,4,5,6", set(range(7))),
        ("0 3 * * */7", "0 0 3 * * */7", {0}),
        ("0 3 * * mon-fri", "0 0 3 * * mon-fri", {1, 2, 3, 4, 5}),
        ("0 3 * * MON-Fri", "0 0 3 * * MON-Fri", {1, 2, 3, 4, 5}),
    ],
)
def test_weekday_seven_is_sunday_and_names_work(expr: str, sent: str, weekdays: set[int]) -> None:
    parsed = parse_cron(expr)
    assert parsed.expr == sent
    assert parsed.weekdays == frozenset(weekdays)
    assert parsed.written == expr


def test_month_names_in_any_case() -> None:
    parsed = parse_cron("0 0 1 JAN,mar-May *")
    assert parsed.months == frozenset({1, 3, 4, 5})
    assert parsed.written == "0 0 1 JAN,mar-May *"


def test_written_form_collapses_only_whitespace() -> None:
    assert parse_cron("  0   3 * *  7 ").written == "0 3 * * 7"
    assert parse_cron("@daily").written == "@daily"


def test_seven_on_sunday_fires_on_sunday() -> None:
    wednesday = datetime(2026, 3, 4, 10, tzinfo=UTC)
    assert parse_cron("0 3 * * 7").next_after(wednesday) == datetime(2026, 3, 8, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ("0 3 * * 8", "day of week 8 is outside 0-6"),
        ("0 3 * * 7-1", "runs backwards"),
        ("0 3 * * sunday", "'sunday' is not a number"),
        ("0 3 * JANUARY *", "'JANUARY' is not a number"),
        ("0 3 7 * *", None),  # 7 is only special in the weekday field
    ],
)
def test_weekday_and_name_errors(expr: str, why: str | None) -> None:
    if why is None:
        assert parse_cron(expr).days == frozenset({7})
        return
    with pytest.raises(InvalidArguments, match="invalid cron expression") as info:
        parse_cron(expr)
    assert why in str(info.value)


# The expected instants below follow the server's calendar walk: it matches fields on the
# wall clock but advances hours in real time, so a skipped wall time does not fire that day
# and a repeated one fires at both of its instants.
def test_spring_forward_gap_skips_the_missing_wall_time() -> None:
    now = datetime(2026, 3, 29, 0, 0, tzinfo=BERLIN)  # clocks jump 02:00 -> 03:00 tonight
    got = parse_cron("30 2 * * *").next_after(now, BERLIN)
    assert got is not None
    assert got.astimezone(UTC) == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)
    assert (got.hour, got.minute, got.utcoffset()) == (2, 30, BERLIN.utcoffset(got))
    # and what is shown exists: converting to UTC and back gives the same wall time
    assert got.astimezone(UTC).astimezone(BERLIN).hour == 2


def test_spring_forward_hourly_runs_continue_in_real_time() -> None:
    t = datetime(2026, 3, 29, 0, 30, tzinfo=BERLIN)
    seen = []
    for _ in range(3):
        nxt = parse_cron("0 * * * *").next_after(t, BERLIN)
        assert nxt is not None
        seen.append(nxt.astimezone(UTC))
        t = nxt
    assert seen == [datetime(2026, 3, 29, h, tzinfo=UTC) for h in (0, 1, 2)]


def test_fall_back_overlap_fires_at_both_instants() -> None:
    now = datetime(2026, 10, 25, 0, 0, tzinfo=BERLIN)  # clocks go 03:00 -> 02:00 tonight
    sched = parse_cron("30 2 * * *")
    first = sched.next_after(now, BERLIN)
    assert first is not None
    assert first.astimezone(UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    second = sched.next_after(first, BERLIN)
    assert second is not None
    assert second.astimezone(UTC) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET
    third = sched.next_after(second, BERLIN)
    assert third is not None
    assert third.astimezone(UTC) == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)


def test_daily_at_midnight_around_dst_in_new_york() -> None:
    # US clocks change at 02:00, so midnight runs are never shifted
    now = datetime(2026, 3, 7, 12, tzinfo=NEW_YORK)
    got = parse_cron("0 0 * * *").next_after(now, NEW_YORK)
    assert got == datetime(2026, 3, 8, 0, 0, tzinfo=NEW_YORK)
    nxt = parse_cron("0 0 * * *").next_after(got, NEW_YORK)
    assert nxt is not None and nxt.astimezone(UTC) == datetime(2026, 3, 9, 4, tzinfo=UTC)


def test_sub_second_now_is_truncated_like_the_server() -> None:
    # the server drops the fraction and starts at the next whole second: a schedule made
    # at 00:00:00.6 fires at 00:00:01 (the real-server check is tests/integration/periodic)
    sched = parse_cron("* * * * * *")
    just_before = datetime(2026, 1, 1, 0, 0, 0, 600_000, tzinfo=UTC)
    assert sched.next_after(just_before) == datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    just_after = datetime(2026, 1, 1, 0, 0, 0, 200_000, tzinfo=UTC)
    assert sched.next_after(just_after) == datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)


def test_schedule_info_next_run_in_a_gap_is_a_real_instant() -> None:
    from ebind.app import App
    from ebind.periodic import plan_schedule

    app = App("cron-test")
    plan = plan_schedule(
        app.registry,
        "gap",
        "reports.nightly",
        cron="30 2 * * 7",
        tz="Europe/Berlin",
        now=datetime(2026, 3, 28, 23, 0, tzinfo=UTC),  # Sunday 00:00 CET, the change day
    )
    assert plan.headers["Nats-Schedule"] == "0 30 2 * * 0"
    assert plan.headers["Ebind-Cron"] == "30 2 * * 7"
    assert plan.info.cron == "30 2 * * 7"
    # the gap swallows 02:30 that Sunday; the next Sunday is the first run
    assert plan.info.next_run is not None
    assert plan.info.next_run.astimezone(UTC) == datetime(2026, 4, 5, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize("expr", ["\u00b2 * * * *", "*/\u00b2 * * * *", "\u0663 * * * *"])
def test_digits_int_refuses_are_invalid_arguments(expr: str) -> None:
    with pytest.raises(InvalidArguments, match="field"):
        parse_cron(expr)
