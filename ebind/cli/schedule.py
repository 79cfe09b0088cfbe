"""``ebind schedule ls | rm``: inspect and remove periodic schedules (see ebind.periodic).

Schedules are created in code with ``await app.schedule(...)``, where the task's arguments
can be checked against its signature; the CLI only lists and removes them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from ebind.cli.output import (
    age,
    confirm,
    echo_json,
    echo_table,
    human_duration,
    is_json,
    json_option,
    run_async,
    to_builtins,
    yes_option,
)

if TYPE_CHECKING:
    from ebind.periodic import ScheduleInfo

__all__ = ["schedule"]


@click.group("schedule")
def schedule() -> None:
    """List and remove periodic schedules (the server fires them; no beat process)."""


def _row(s: ScheduleInfo) -> dict[str, Any]:
    return {
        "name": s.name,
        "task": s.task,
        "every_seconds": s.every.total_seconds() if s.every is not None else None,
        "cron": s.cron,
        "tz": s.tz,
        "target": s.target,
        "created_at": to_builtins(s.created_at),
        "next_run": to_builtins(s.next_run),
    }


def _when(s: ScheduleInfo) -> str:
    if s.every is not None:
        return f"every {human_duration(s.every)}"
    return f"cron {s.cron}" + (f" ({s.tz})" if s.tz else "")


def _next(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "—"
    return f"in {human_duration(at - now)}" if at > now else "due"


@schedule.command("ls")
@json_option
@click.pass_context
def ls(ctx: click.Context) -> None:
    """List every periodic schedule, by name."""
    found = run_async(ctx, lambda app: app.schedules())
    if found is None:
        return
    if is_json(ctx):
        echo_json([_row(s) for s in found])
        return
    if not found:
        click.echo("no schedules")
        return
    now = datetime.now(UTC)
    echo_table(
        ["NAME", "TASK", "SCHEDULE", "NEXT", "AGE", "TARGET"],
        [
            [s.name, s.task, _when(s), _next(s.next_run, now), age(s.created_at, now), s.target]
            for s in found
        ],
    )


@schedule.command("rm")
@click.argument("name")
@yes_option
@click.pass_context
def rm(ctx: click.Context, name: str, yes: bool) -> None:
    """Remove the schedule NAME (a firing already produced still runs)."""
    confirm(f"Remove schedule {name!r}? It exists only on the server", yes)
    removed = run_async(ctx, lambda app: app.unschedule(name))
    if removed is None:
        return
    if not removed:
        raise click.ClickException(
            f"no schedule named {name!r}; list them with `ebind schedule ls`"
        )
    click.echo(f"removed schedule {name}")
