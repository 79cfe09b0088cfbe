"""How long ebind keeps each kind of data: one ``Retention`` setting on the App.

Every limit that removes data is configuration with a documented default, and every
removal leaves a record (a dead letter of kind ``expired`` or a typed error for the
waiter). The defaults suit production: a queued task is kept for a week, long enough
to survive a weekend outage of every worker.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import msgspec

from ebind.errors import InvalidArguments

__all__ = ["ENV_PREFIX", "Retention", "parse_duration"]

ENV_PREFIX = "EBIND_RETENTION_"

_DAY = 86400.0
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": _DAY, "w": 7 * _DAY}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


MAX_SECONDS = 100 * 365.25 * _DAY
"""Longest retention accepted: far below the ~292 years a server's duration can hold."""


class Retention(msgspec.Struct, kw_only=True, frozen=True):
    """How long tasks, results, dead letters and finished DAG history are kept (seconds).

    Attributes:
        tasks: the horizon of a queued task (including its retries and countdowns); a
            task that cannot run before it is dead-lettered as ``expired``.
        results: how long a task's response can still be read by a waiter.
        dead_letters: how long a dead letter stays in the DLQ.
        dag_history: how long a finished DAG (meta, steps, results, signals) is kept.
    """

    tasks: float = 7 * _DAY
    results: float = 1 * _DAY
    dead_letters: float = 30 * _DAY
    dag_history: float = 7 * _DAY

    def __post_init__(self) -> None:
        for field_name in self.__struct_fields__:
            value = getattr(self, field_name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (1.0 <= value <= MAX_SECONDS)
            ):
                raise InvalidArguments(
                    f"Retention.{field_name} must be a number of seconds from 1 to "
                    f"{MAX_SECONDS:.0f} (100 years: a stream's max age is a 64-bit count of "
                    f"nanoseconds), got {value!r}",
                    parameter=field_name,
                )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Retention:
        """Defaults overridden by ``EBIND_RETENTION_TASKS`` / ``_RESULTS`` / ... (e.g. ``14d``)."""
        env = os.environ if environ is None else environ
        values: dict[str, float] = {}
        for field_name in cls.__struct_fields__:
            raw = env.get(ENV_PREFIX + field_name.upper())
            if raw:
                values[field_name] = parse_duration(raw, what=ENV_PREFIX + field_name.upper())
        return cls(**values)


def parse_duration(text: str, *, what: str = "duration") -> float:
    """Seconds in ``"90"``, ``"30s"``, ``"15m"``, ``"12h"``, ``"7d"``, ``"2w"`` or ``"1d12h"``."""
    raw = text.strip()
    try:
        return float(raw) if raw else _bad(what, text)
    except ValueError:
        pass
    total, pos = 0.0, 0
    for m in _DURATION_RE.finditer(raw):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(raw) or pos == 0:
        _bad(what, text)
    return total


def _bad(what: str, text: str) -> float:
    raise InvalidArguments(
        f"{what}: {text!r} is not a duration; use seconds or a number with s, m, h, d or w "
        "(e.g. 30s, 12h, 7d, 1d12h)",
        parameter=what,
    )
