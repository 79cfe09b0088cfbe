"""``ebind task get ID``: the latest progress a task reported (a command of ``ebind task``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from ebind.cli.output import age, echo_json, is_json, json_option, run_async
from ebind.progress import Progress, read_progress

if TYPE_CHECKING:
    from ebind.app import App

__all__ = ["describe", "get", "task_id_problem"]


def task_id_problem(task_id: str) -> str:
    """Why ``task_id`` cannot name a task ("" when it can; DAG steps are ``<dag>:<step>``)."""
    if not task_id:
        return "task id is empty"
    bad = sorted({c for c in task_id if c in ".*>" or c.isspace() or not c.isprintable()})
    if bad:
        return f"task id {task_id!r} contains {''.join(bad)!r}, which no task id holds"
    return ""


def describe(task_id: str, progress: Progress | None, now: datetime | None = None) -> str:
    """``task ID: 40% "note" (3s ago)``, or that no progress was reported."""
    if progress is None:
        return f"task {task_id}: no progress reported (or it expired with the task's result)"
    note = f" {progress.note!r}" if progress.note else ""
    when = age(progress.at, now or datetime.now(UTC))
    return f"task {task_id}: {progress.fraction:.0%}{note} ({when} ago)"


async def _read(app: App, task_id: str) -> Progress | None:
    return await read_progress(app.nc, task_id)


@click.command("get")
@click.argument("task_id")
@json_option
@click.pass_context
def get(ctx: click.Context, task_id: str) -> None:
    """Show the latest progress task TASK_ID reported (fraction, note, when)."""
    problem = task_id_problem(task_id)
    if problem:
        raise click.BadParameter(problem, param_hint="TASK_ID")
    got: Progress | None = run_async(ctx, lambda app: _read(app, task_id))
    if is_json(ctx):
        doc: dict[str, Any] = {"task_id": task_id, "progress": None}
        if got is not None:
            doc["progress"] = {"fraction": got.fraction, "note": got.note, "at": got.at}
        echo_json(doc)
        return
    click.echo(describe(task_id, got))
