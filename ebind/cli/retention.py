"""``--retention-tasks`` / ``-results`` / ``-dead-letters`` / ``-dag-history`` for every command.

Each option also reads its ``EBIND_RETENTION_*`` variable; a value is a duration such as
``90``, ``30s``, ``12h``, ``14d`` or ``1d12h``. The ``ebind`` group takes them for every
subcommand (``ebind --retention-tasks 14d stream ls``), and ``ebind server`` / ``ebind
worker`` take them directly too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click
import msgspec

from ebind.errors import InvalidArguments
from ebind.retention import ENV_PREFIX, Retention, parse_duration

__all__ = [
    "FIELDS",
    "describe",
    "merged",
    "merged_values",
    "retention_options",
    "retention_values",
]

F = TypeVar("F", bound=Callable[..., Any])

FIELDS = {
    "tasks": "how long a queued task may wait before it is dead-lettered as expired",
    "results": "how long a task's result can still be read",
    "dead_letters": "how long a dead letter stays in the DLQ",
    "dag_history": "how long a finished DAG is kept",
}
"""Retention field -> what its option sets (the option is ``--retention-<field with dashes>``)."""


def _parse(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        return parse_duration(value, what=f"--{(param.name or '').replace('_', '-')}")
    except InvalidArguments as exc:
        raise click.BadParameter(str(exc)) from None


def retention_options(fn: F) -> F:
    """Add the four ``--retention-*`` options (keyword args ``retention_<field>``)."""
    for field_name, what in reversed(FIELDS.items()):
        fn = click.option(
            f"--retention-{field_name.replace('_', '-')}",
            f"retention_{field_name}",
            envvar=ENV_PREFIX + field_name.upper(),
            default=None,
            callback=_parse,
            metavar="DURATION",
            help=f"{what[0].upper()}{what[1:]} (e.g. 14d; env {ENV_PREFIX}{field_name.upper()}).",
        )(fn)
    return fn


def retention_values(kwargs: Mapping[str, Any]) -> dict[str, float]:
    """The retention fields given as options (``retention_<field>`` keys that are set)."""
    return {
        name: float(kwargs[f"retention_{name}"])
        for name in FIELDS
        if kwargs.get(f"retention_{name}") is not None
    }


def merged_values(*layers: Mapping[str, float]) -> dict[str, float]:
    """The layers' fields in one mapping (later layers win)."""
    values: dict[str, float] = {}
    for layer in layers:
        values.update(layer)
    return values


def describe(retention: Retention) -> str:
    """``tasks 7d, results 1d, dead_letters 30d, dag_history 7d`` (whole units where exact)."""
    return ", ".join(f"{name} {_human(getattr(retention, name))}" for name in FIELDS)


def _human(seconds: float) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def merged(base: Retention, *layers: Mapping[str, float]) -> Retention:
    """``base`` with each layer's fields applied in order (later layers win)."""
    values = merged_values(*layers)
    if not values:
        return base
    try:
        return Retention(**{**msgspec.structs.asdict(base), **values})
    except InvalidArguments as exc:
        raise click.BadParameter(str(exc)) from None
