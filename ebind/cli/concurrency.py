"""``ebind concurrency ls``: the concurrency slots taken now, per task and key."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ebind.cli.output import echo_json, echo_table, is_json, json_option, run_async, truncate

if TYPE_CHECKING:
    from ebind.app import App
    from ebind.limits.concurrency_rules import SlotRow

__all__ = ["concurrency"]


@click.group()
def concurrency() -> None:
    """Inspect cluster-wide concurrency limits (tasks declared with concurrency=N)."""


async def _rows(app: App) -> list[SlotRow]:
    from ebind.limits.concurrency import list_slots

    return await list_slots(app.js)


def _seconds(value: float) -> str:
    return f"{value:.1f}s"


@concurrency.command("ls")
@json_option
@click.pass_context
def ls(ctx: click.Context) -> None:
    """List the slots held now: task, key, slot, task id, worker, running for, expires in.

    A task waiting for a slot is not listed here: `ebind task get ID` shows its wait.
    A record that is not a valid lease is listed as invalid; workers treat it as free.
    """
    rows: list[SlotRow] | None = run_async(ctx, _rows)
    if rows is None:
        return
    if is_json(ctx):
        echo_json(rows)
        return
    if not rows:
        click.echo("no concurrency slots are held")
        return
    echo_table(
        ["TASK", "KEY", "SLOT", "TASK ID", "WORKER", "RUNNING", "EXPIRES IN"],
        [_row(r) for r in rows],
    )


def _row(r: SlotRow) -> list[str]:
    if not r.valid:
        return ["(invalid record)", r.bucket_key, str(r.slot), "", "", "", ""]
    key = truncate(r.key, 40) or "-"
    running, expires = _seconds(r.running_for), _seconds(r.expires_in)
    return [r.task_name, key, str(r.slot), r.task_id, r.worker_id, running, expires]
