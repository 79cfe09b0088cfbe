"""Pure parts of periodic schedules: cron grammar, intervals, validation, per-firing ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest

from ebind.app import App
from ebind.cron import PREDEFINED, every_header, parse_cron, parse_go_duration
from ebind.errors import InvalidArguments, InvalidName
from ebind.periodic import firing_envelope, plan_schedule, schedule_subject
from ebind.wire import TaskEnvelope

NOW = datetime(2026, 3, 4, 10, 20, 30, tzinfo=UTC)  # a Wednesday


# ---------------------------------------------------------------------------- cron
@pytest.mark.parametrize(
    ("expr", "sent"),
    [
        ("*/5 * * * *", "0 */5 * * * *"),
        ("0 9 * * mon-fri", "0 0 9 * * mon-fri"),
        ("30 0 9 * * *", "30 0 9 * * *"),
        ("  0 0 9 ? * SUN ", "0 0 9 ? * SUN"),
        ("0 0 1-10/2 * JAN,mar *", "0 0 1-10/2 * JAN,mar *"),
        ("0/15 * * * * *", "0/15 * * * * *"),
        ("@hourly", "@hourly"),
        ("@daily", "@daily"),
    ],
)
def test_parse_cron_accepts_what_the_server_accepts(expr: str, sent: str) -> None:
    assert parse_cron(expr).expr == sent


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ("* * * *", "it has 4 fields"),
        ("* * * * * * *", "it has 7 fields"),
        ("60 * * * * *", "second 60 is outside 0-59"),
        ("0 0 24 * * *", "hour 24 is outside 0-23"),
        ("0 0 0 0 * *", "day of month 0 is outside 1-31"),
        ("0 0 0 * 13 *", "month 13 is outside 1-12"),
        ("0 0 9 * * 8", "day of week 8 is outside 0-6"),
        ("5-1 * * * * *", "range '5-1' in the second field runs backwards"),
        ("*/0 * * * * *", "step '0' in the second field must be >= 1"),
        ("a * * * * *", "'a' is not a number in the second field"),
        ("0 0 9 * * monday", "'monday' is not a number in the day of week field"),
        ("0 0 9 L * *", "'L' is not a number"),
        ("0 0 0 30 2 *", "it matches no date"),
        ("@DAILY", "unknown alias"),
        ("@reboot", "unknown alias"),
    ],
)
def test_parse_cron_rejects_with_the_reason(expr: str, why: str) -> None:
    with pytest.raises(InvalidArguments, match="invalid cron expression") as info:
        parse_cron(expr)
    assert why in str(info.value)


def test_parse_cron_points_intervals_at_every() -> None:
    with pytest.raises(InvalidArguments, match="pass every=timedelta"):
        parse_cron("@every 5m")


def test_predefined_aliases_all_parse() -> None:
    for alias in PREDEFINED:
        assert parse_cron(alias).expr == alias


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("*/5 * * * *", datetime(2026, 3, 4, 10, 25, 0, tzinfo=UTC)),
        ("0 9 * * *", datetime(2026, 3, 5, 9, 0, tzinfo=UTC)),
        ("0 0 0 1 * *", datetime(2026, 4, 1, tzinfo=UTC)),
        ("@yearly", datetime(2027, 1, 1, tzinfo=UTC)),
        ("0 0 0 29 2 *", datetime(2028, 2, 29, tzinfo=UTC)),
        ("0 0 9 * * sat", datetime(2026, 3, 7, 9, tzinfo=UTC)),
        ("45 * * * * *", datetime(2026, 3, 4, 10, 20, 45, tzinfo=UTC)),
        ("0 0 0 31 12 *", datetime(2026, 12, 31, tzinfo=UTC)),
    ],
)
def test_next_after(expr: str, expected: datetime) -> None:
    assert parse_cron(expr).next_after(NOW) == expected


def test_next_after_restricted_day_fields_match_either() -> None:
    # the 15th or any Monday, whichever comes first (cron's OR rule)
    sched = parse_cron("0 0 0 15 * mon")
    assert sched.next_after(NOW) == datetime(2026, 3, 9, tzinfo=UTC)
    assert sched.next_after(datetime(2026, 3, 10, tzinfo=UTC)) == datetime(2026, 3, 15, tzinfo=UTC)


def test_next_after_in_a_time_zone() -> None:
    paris = ZoneInfo("Europe/Paris")
    got = parse_cron("0 9 * * *").next_after(NOW, paris)
    assert got == datetime(2026, 3, 5, 9, tzinfo=paris)
    assert got is not None
    assert got.astimezone(UTC).hour == 8


# ---------------------------------------------------------------------------- intervals
@pytest.mark.parametrize(
    ("every", "header"),
    [
        (timedelta(seconds=1), "@every 1s"),
        (timedelta(minutes=90), "@every 5400s"),
        (1.5, "@every 1500ms"),
        (2, "@every 2s"),
    ],
)
def test_every_header(every: timedelta | float, header: str) -> None:
    assert every_header(every) == header


@pytest.mark.parametrize("bad", [timedelta(milliseconds=999), 0, -1, float("nan"), float("inf")])
def test_every_below_one_second_is_rejected(bad: Any) -> None:
    with pytest.raises(InvalidArguments, match="at least 1 second"):
        every_header(bad)


@pytest.mark.parametrize("bad", ["5m", True, None])
def test_every_of_the_wrong_type_is_rejected(bad: Any) -> None:
    with pytest.raises(InvalidArguments, match="every must be a timedelta or seconds"):
        every_header(bad)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1), ("1m30s", 90), ("1500ms", 1.5), ("2h", 7200), (".5s", 0.5), ("1.5h", 5400)],
)
def test_parse_go_duration(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["", "1", "1d", "s", "1s x", "-1s"])
def test_parse_go_duration_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="not a Go duration"):
        parse_go_duration(bad)


# ---------------------------------------------------------------------------- plan
@pytest.fixture
def app() -> App:
    a = App("plan")

    @a.task(name="report.send")
    def send(to: str, copies: int = 1) -> None: ...

    return a


def test_plan_every_builds_the_schedule_message(app: App) -> None:
    plan = plan_schedule(
        app.registry, "hourly", app.tasks["report.send"], ["ops"], {"copies": 2},
        every=timedelta(hours=1), now=NOW,
    )  # fmt: skip
    assert plan.subject == "TASKS_SCHEDULES.hourly"
    assert plan.headers == {
        "Nats-Schedule": "@every 3600s",
        "Nats-Schedule-Target": "TASKS.report.send",
        "Nats-TTL": "never",
    }
    env = msgspec.json.decode(plan.data, type=TaskEnvelope)
    assert (env.id, env.name, bytes(env.payload), env.reply_to) == (
        "hourly",
        "report.send",
        b'["ops",2]',
        "",
    )
    assert plan.info.every == timedelta(hours=1)
    assert plan.info.next_run == NOW + timedelta(hours=1)


def test_plan_cron_with_tz_and_target(app: App) -> None:
    plan = plan_schedule(
        app.registry, "nine", "report.send", ["ops"], cron="0 9 * * *",
        tz="Europe/Paris", target="eu-1", now=NOW,
    )  # fmt: skip
    assert plan.headers["Nats-Schedule"] == "0 0 9 * * *"
    assert plan.headers["Nats-Schedule-Time-Zone"] == "Europe/Paris"
    assert plan.headers["Nats-Schedule-Target"].startswith("TASKS_TARGET.")
    assert plan.info.cron == "0 9 * * *" and plan.info.target == "eu-1"


def test_plan_fires_into_the_tasks_queue_and_band() -> None:
    a = App("plan-q")

    @a.task(name="report.ranked", queue="reports", priority="low")
    def ranked() -> None: ...

    plan = plan_schedule(a.registry, "nightly", ranked, every=60, now=NOW)
    assert plan.headers["Nats-Schedule-Target"] == "TASKQ.reports.low.report.ranked"
    env = msgspec.json.decode(plan.data, type=TaskEnvelope)
    assert (env.queue, env.priority) == ("reports", "low")


def test_plan_unknown_task_name_sends_positional_args_unchecked(app: App) -> None:
    plan = plan_schedule(app.registry, "x", "other.task", [1, "a"], every=60, now=NOW)
    assert b'"payload":[1,"a"]' in plan.data


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, InvalidArguments, "exactly one of every= or cron="),
        ({"every": 5, "cron": "* * * * *"}, InvalidArguments, "exactly one of every= or cron="),
        ({"every": 0.5}, InvalidArguments, "at least 1 second"),
        ({"cron": "61 * * * *"}, InvalidArguments, "minute 61"),
        ({"every": 5, "tz": "Europe/Paris"}, InvalidArguments, "tz= applies to cron"),
        ({"cron": "* * * * *", "tz": "Mars/Olympus"}, InvalidArguments, "unknown time zone"),
        ({"every": 5, "target": " "}, InvalidName, "target must be a non-empty string"),
    ],
)
def test_plan_rejects_bad_options(
    app: App, kwargs: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        plan_schedule(app.registry, "s", "report.send", ["ops"], **kwargs)


def test_plan_checks_arguments_against_the_handler(app: App) -> None:
    with pytest.raises(InvalidArguments, match="copies"):
        plan_schedule(app.registry, "s", "report.send", ["ops"], {"copies": "two"}, every=5)
    with pytest.raises(InvalidArguments, match="to"):
        plan_schedule(app.registry, "s", "report.send", [], every=5)


def test_plan_unregistered_task_rejects_keyword_arguments(app: App) -> None:
    with pytest.raises(InvalidArguments, match="cannot be bound; pass them positionally"):
        plan_schedule(app.registry, "s", "other.task", [], {"a": 1}, every=5)


@pytest.mark.parametrize("name", ["a.b", "a b", "", "x" * 129, "a*"])
def test_schedule_name_is_checked(name: str) -> None:
    with pytest.raises(InvalidName, match="schedule name"):
        schedule_subject(name)


# ---------------------------------------------------------------------------- firings
@dataclass
class _Seq:
    stream: int


@dataclass
class _Meta:
    sequence: _Seq
    timestamp: datetime = NOW


@dataclass
class _Msg:
    headers: dict[str, str] | None
    metadata: _Meta = field(default_factory=lambda: _Meta(_Seq(42)))


ENV = TaskEnvelope(id="hourly", name="report.send")


def test_firing_gets_an_id_from_its_stream_sequence() -> None:
    msg = _Msg({"Nats-Scheduler": "TASKS_SCHEDULES.hourly", "Nats-Schedule-Next": "x"})
    env = firing_envelope(ENV, msg)
    assert env.id == "hourly-42" and env.enqueued_at == NOW


@pytest.mark.parametrize(
    "headers",
    [None, {}, {"Nats-Msg-Id": "t1"}, {"Nats-Scheduler": "TASKS_SCHEDULED.t1"}],
)
def test_other_messages_keep_their_id(headers: dict[str, str] | None) -> None:
    assert firing_envelope(ENV, _Msg(headers)) is ENV
