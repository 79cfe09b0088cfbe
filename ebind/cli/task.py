"""``ebind task get|revoke ID``: one task by its id (revoke is durable across the cluster)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ebind.cli.output import confirm, echo_json, is_json, json_option, run_async, yes_option
from ebind.cli.task_get import get

if TYPE_CHECKING:
    from ebind.revoke import Revocation

__all__ = ["task"]


@click.group()
def task() -> None:
    """Act on one task by its id: its progress, or revoke it."""


task.add_command(get)


@task.command("revoke")
@click.argument("task_id")
@yes_option
@json_option
@click.pass_context
def revoke(ctx: click.Context, task_id: str, yes: bool) -> None:
    """Revoke TASK_ID: a queued or delayed task never runs, a running one is cancelled.

    The revocation lasts the tasks horizon and survives worker restarts. An unknown or
    finished id is recorded all the same and changes nothing. A periodic schedule is
    removed with `ebind schedule rm`, not revoked.
    """
    confirm(f"Revoke task {task_id!r}? It cannot be undone", yes)
    done: Revocation | None = run_async(ctx, lambda app: app.revoke(task_id))
    if done is None:
        return
    if is_json(ctx):
        echo_json({"task_id": done.task_id, "until": done.until.isoformat()})
    else:
        click.echo(f"revoked {done.task_id} (recorded until {done.until.isoformat()})")
