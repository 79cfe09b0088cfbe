"""``ebind ratelimit ls``: the cluster-wide rate limits and how far each is booked ahead."""

from __future__ import annotations

from typing import Any

import click

from ebind.cli.output import echo_json, echo_table, is_json, json_option, run_async, to_builtins

__all__ = ["ratelimit"]


@click.group("ratelimit")
def ratelimit() -> None:
    """Inspect the cluster-wide rate limits (records in the ebind-ratelimits bucket)."""


async def _limits(app: Any) -> Any:
    from ebind.worker.admission import list_limits

    return await list_limits(app.js)


def _rate(per_second: float) -> str:
    if per_second >= 1:
        return f"{per_second:g}/s"
    if per_second * 60 >= 1:
        return f"{per_second * 60:g}/m"
    return f"{per_second * 3600:g}/h"


@ratelimit.command("ls")
@json_option
@click.pass_context
def ls(ctx: click.Context) -> None:
    """List each limit: its task, key, rate, seconds booked ahead (a new task's wait), workers."""
    found = run_async(ctx, _limits)
    if found is None:
        return
    if is_json(ctx):
        echo_json([to_builtins(i) for i in found])
        return
    if not found:
        click.echo("no rate limits in use")
        return
    echo_table(
        ["TASK", "KEY", "RATE", "WAIT", "WORKERS"],
        [
            [
                i.task,
                i.key or "—",
                _rate(i.per_second) if not i.problem else f"corrupt: {i.problem}",
                f"{i.booked_ahead:.2f}s",
                str(i.workers),
            ]
            for i in found
        ],
    )
