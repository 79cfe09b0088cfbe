"""Pure cron and interval parsing for periodic schedules (the grammar nats-server 2.15 accepts).

Cron expressions have 6 fields, seconds first; a 5-field expression gets a leading ``0``.
Names (``jan``, ``MON-FRI``) are case-insensitive, ``7`` is Sunday as in crontab (the server
only knows ``0``, so the weekday field is rewritten for it), aliases (``@hourly``) are
lowercase, and a schedule that matches no date is rejected here instead of never firing.
``@every`` takes a Go duration of at least one second. :meth:`CronSchedule.next_after`
walks the calendar exactly as the server does, so the next run shown across a daylight
saving change is the instant the server fires. No IO: :mod:`ebind.periodic` publishes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import cast

from ebind.errors import InvalidArguments

__all__ = ["PREDEFINED", "CronSchedule", "every_header", "parse_cron", "parse_go_duration"]

PREDEFINED = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
"""The server's cron aliases (exact, lowercase) and the 6-field expressions they stand for."""

_FIELDS = (
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 6),
)
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS = {m: i + 1 for i, m in enumerate(_MONTH_NAMES)}
_WEEKDAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_NAMES: dict[int, dict[str, int]] = {4: _MONTHS, 5: _WEEKDAYS}
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)")
_SEARCH_YEARS = 9  # covers Feb 29 (leap years are at most 8 years apart)


# ---------------------------------------------------------------------------- cron (pure)
@dataclass(frozen=True)
class CronSchedule:
    """A parsed cron expression: ``expr`` is what the server receives, ``written`` the input."""

    expr: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool
    written: str = ""

    def matches_day(self, d: date) -> bool:
        """Cron's day rule: both day fields restricted means either may match."""
        dom = d.day in self.days
        dow = (d.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def next_after(self, after: datetime, tz: tzinfo = UTC) -> datetime | None:
        """The first firing strictly after ``after`` (aware), in ``tz``; None if none soon.

        The search mirrors the server's: fields are matched on the wall clock of ``tz``,
        but hours, minutes and seconds advance in real time. So a wall time skipped by a
        spring-forward gap does not fire that day, and one repeated by a fall-back overlap
        fires at both instants.
        """
        t = _whole_second(after.astimezone(UTC)) + timedelta(seconds=1)
        limit = t.astimezone(tz).year + _SEARCH_YEARS
        truncated = False
        while t.astimezone(tz).year <= limit:
            t, truncated, wrapped = self._advance(t, tz, truncated)
            if not wrapped:
                return t.astimezone(tz)
        return None

    def _advance(self, t: datetime, tz: tzinfo, truncated: bool) -> tuple[datetime, bool, bool]:
        """One pass over the fields; ``wrapped`` means a field rolled over: search again."""
        local = t.astimezone(tz)
        while local.month not in self.months:
            if not truncated:
                truncated, t = True, _wall(tz, local.year, local.month, 1)
                local = t.astimezone(tz)
            t = _wall(tz, local.year, local.month + 1, local.day, local.hour, local.minute)
            local = t.astimezone(tz)
            if local.month == 1:
                return t, truncated, True
        while not self.matches_day(local.date()):
            if not truncated:
                truncated, t = True, _wall(tz, local.year, local.month, local.day)
                local = t.astimezone(tz)
            t = _wall(tz, local.year, local.month, local.day + 1, local.hour, local.minute)
            local = t.astimezone(tz)
            if local.day == 1:
                return t, truncated, True
        for unit, allowed, part in (
            (3600, self.hours, "hour"),
            (60, self.minutes, "minute"),
            (1, self.seconds, "second"),
        ):
            while getattr(local, part) not in allowed:
                if not truncated:
                    truncated = True
                    t = _truncate(t, local, tz, unit)
                t += timedelta(seconds=unit)
                local = t.astimezone(tz)
                if getattr(local, part) == 0:
                    return t, truncated, True
        return t, truncated, False


def _whole_second(t: datetime) -> datetime:
    """Drop the fraction of a second, as the server does before it looks for the next run."""
    return t.replace(microsecond=0)


def _wall(tz: tzinfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """The instant of a wall time in ``tz``, normalising overflowing months and days.

    A wall time inside a gap or an overlap resolves the way the server's time library
    does: take the offset in force at the wall time read as UTC, and if the instant this
    gives lies under another offset, use that one instead.
    """
    first = date(year + (month - 1) // 12, (month - 1) % 12 + 1, 1) + timedelta(days=day - 1)
    as_utc = datetime(first.year, first.month, first.day, hour, minute, tzinfo=UTC)
    offset = as_utc.astimezone(tz).utcoffset() or timedelta(0)
    instant = as_utc - offset
    actual = instant.astimezone(tz).utcoffset() or timedelta(0)
    return as_utc - actual if actual != offset else instant


def _truncate(t: datetime, local: datetime, tz: tzinfo, unit: int) -> datetime:
    """Drop what lies below ``unit`` seconds: an hour by the wall clock, less in real time."""
    if unit == 3600:
        return _wall(tz, local.year, local.month, local.day, local.hour)
    return t - timedelta(seconds=int(t.timestamp()) % unit)


def _bad_cron(expr: str, why: str) -> InvalidArguments:
    return InvalidArguments(
        f"invalid cron expression {expr!r}: {why}; use 5 fields (minute hour day month "
        "weekday), 6 fields (second first) or one of " + ", ".join(PREDEFINED),
        parameter="cron",
    )


def _value(expr: str, index: int, token: str) -> int:
    name, lo, hi = _FIELDS[index]
    names = _NAMES.get(index, {})
    if token.lower() in names:
        return names[token.lower()]
    if not (token.isascii() and token.isdigit()):
        raise _bad_cron(expr, f"{token!r} is not a number in the {name} field")
    value = int(token)
    if index == 5 and value == 7:
        return 7  # Sunday, as crontab writes it; folded into 0 by _field
    if not lo <= value <= hi:
        raise _bad_cron(expr, f"{name} {value} is outside {lo}-{hi}")
    return value


def _field(expr: str, index: int, text: str) -> tuple[frozenset[int], bool]:
    name, lo, hi = _FIELDS[index]
    out: set[int] = set()
    star = False
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not (step_text.isascii() and step_text.isdigit()) or int(step_text) < 1:
                raise _bad_cron(expr, f"step {step_text!r} in the {name} field must be >= 1")
            step = int(step_text)
        if base == "*" or (base == "?" and index in (3, 5)):
            first, last = lo, hi
            star = star or step == 1
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = _value(expr, index, a), _value(expr, index, b)
            if first > last:
                raise _bad_cron(expr, f"range {base!r} in the {name} field runs backwards")
        else:
            first = _value(expr, index, base)
            last = hi if slash else first  # "5/15" means from 5 to the end, every 15
        out.update(range(first, last + 1, step))
    if index == 5 and 7 in out:
        out = (out - {7}) | {0}
    return frozenset(out), star


def parse_cron(expr: str) -> CronSchedule:
    """Parse and check a cron expression the way nats-server 2.15 accepts it.

    Raises:
        InvalidArguments: naming the bad field and value, or a schedule that never fires.
    """
    if not isinstance(cast(object, expr), str) or not expr.strip():
        raise InvalidArguments("cron must be a non-empty string like '0 * * * *'")
    text = expr.strip()
    if text.startswith("@every"):
        raise InvalidArguments(
            f"cron {expr!r} is an interval; pass every=timedelta(...) instead", parameter="cron"
        )
    if text.startswith("@"):
        if text not in PREDEFINED:
            raise _bad_cron(expr, "unknown alias (aliases are lowercase)")
        fields = PREDEFINED[text].split()
    else:
        fields = text.split()
        if len(fields) == 5:
            fields = ["0", *fields]  # the server wants seconds first
        elif len(fields) != 6:
            raise _bad_cron(expr, f"it has {len(fields)} fields")
    parsed = [_field(expr, i, f) for i, f in enumerate(fields)]
    if _mentions_seven(fields[5]):
        weekdays, star = parsed[5]
        fields[5] = "*" if star else ",".join(str(d) for d in sorted(weekdays))
    sched = CronSchedule(
        expr=text if text.startswith("@") else " ".join(fields),
        written=" ".join(text.split()),
        seconds=parsed[0][0],
        minutes=parsed[1][0],
        hours=parsed[2][0],
        days=parsed[3][0],
        months=parsed[4][0],
        weekdays=parsed[5][0],
        any_day=parsed[3][1],
        any_weekday=parsed[5][1],
    )
    if sched.next_after(datetime(2000, 1, 1, tzinfo=UTC)) is None:
        raise _bad_cron(expr, "it matches no date (e.g. February 30)")
    return sched


def _mentions_seven(field: str) -> bool:
    """True when the weekday field names day 7, which the server does not accept."""
    return any("7" in item.split("/")[0].split("-") for item in field.split(","))


# ---------------------------------------------------------------------------- intervals (pure)
def every_header(every: timedelta | float) -> str:
    """``@every <Go duration>`` for an interval of at least one second.

    Raises:
        InvalidArguments: not a timedelta / number of seconds, not finite, or under 1 s.
    """
    value = cast(object, every)
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidArguments(
            f"every must be a timedelta or seconds, got {type(every).__name__}", parameter="every"
        )
    if not math.isfinite(seconds) or seconds < 1:
        raise InvalidArguments(
            f"every must be at least 1 second (the server's minimum), got {every!r}",
            parameter="every",
        )
    millis = round(seconds * 1000)
    return f"@every {millis // 1000}s" if millis % 1000 == 0 else f"@every {millis}ms"


def parse_go_duration(text: str) -> timedelta:
    """Parse a Go ``time.Duration`` string such as ``1m30s`` or ``1500ms``.

    Raises:
        ValueError: not a Go duration.
    """
    pos, total = 0, 0.0
    for m in _GO_DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise ValueError(f"not a Go duration: {text!r}")
    return timedelta(seconds=total)
