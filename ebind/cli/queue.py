"""``ebind queue ls`` (what waits in each lane) and ``ebind worker ls`` (who is running)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import click

from ebind.cli.output import echo_table, emit, human_duration, json_option, run_async, style

__all__ = ["queue", "worker_ls"]


def _seconds(value: float | None) -> str:
    return "—" if value is None else human_duration(timedelta(seconds=value))


@click.group("queue")
def queue() -> None:
    """Inspect queues: depth, oldest waiting task and consumers per queue, band and task."""


@queue.command("ls")
@click.option("-Q", "--queue", "only", default=None, help="Show only this queue.")
@json_option
@click.pass_context
def queue_ls(ctx: click.Context, only: str | None) -> None:
    """List every lane (queue, band, task) holding tasks or consumed by some worker."""

    async def read(app: Any) -> list[dict[str, Any]]:
        import msgspec

        from ebind.inspection import queue_rows

        rows = await queue_rows(app.js)
        return [msgspec.to_builtins(r) for r in rows if only is None or r.queue == only]

    emit(ctx, run_async(ctx, read), _queue_table)


def _queue_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo("no queued tasks and no lane consumers")
        return
    echo_table(
        ["QUEUE", "BAND", "TASK", "DEPTH", "OLDEST", "CONSUMER", "PULLS", "UNACKED"],
        [
            [
                r["queue"],
                r["band"],
                r["task"],
                str(r["depth"]),
                _seconds(r["oldest_age"]),
                "yes" if r["consumer"] else style("none", fg="yellow"),
                str(r["pulls"]),
                str(r["unacked"]),
            ]
            for r in rows
        ],
    )


@click.command("ls")
@json_option
@click.pass_context
def worker_ls(ctx: click.Context) -> None:
    """List running workers from the records they rewrite every few seconds."""

    async def read(app: Any) -> dict[str, Any]:
        import msgspec

        from ebind.inspection import worker_rows

        rows, unreadable = await worker_rows(app.js)
        return {"workers": [msgspec.to_builtins(r) for r in rows], "unreadable": unreadable}

    emit(ctx, run_async(ctx, read), _worker_table)


def _extra_claims(row: dict[str, Any]) -> list[str]:
    """Claims besides the two every worker holds (its id and ``worker:<id>``)."""
    own = {row["worker_id"], f"worker:{row['worker_id']}"}
    return [c for c in row["claims"] if c not in own]


def _worker_table(doc: dict[str, Any]) -> None:
    rows = doc["workers"]
    if not rows:
        click.echo("no running workers")
    else:
        echo_table(
            ["ID", "QUEUES", "CLAIMS", "CONCURRENCY", "IN-FLIGHT", "LEADER", "HOST", "HEARTBEAT"],
            [
                [
                    r["worker_id"],
                    ",".join(r["queues"]),
                    ",".join(_extra_claims(r)) or "-",
                    str(r["concurrency"]),
                    str(r["in_flight"]),
                    "yes" if r["leader"] else "",
                    f"{r['host']}:{r['pid']}",
                    _seconds(r["heartbeat_age"]) + " ago",
                ]
                for r in rows
            ],
        )
    if doc["unreadable"]:
        click.echo(style(f"{doc['unreadable']} unreadable worker record(s) skipped", fg="yellow"))
