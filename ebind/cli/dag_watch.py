"""``ebind dag watch``: a live feed of DAG events through the bus tap.

The tap is a core-NATS subscription on ``DAG.>``: it sees every event as it is published
and takes nothing from the scheduler's work queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from ebind.cli.dag_render import event_line, fmt_time
from ebind.cli.output import echo_json_line, is_json, json_option, run_async
from ebind.workflow.types import DAGMeta, DAGStatus

if TYPE_CHECKING:
    from ebind.app import App
    from ebind.workflow.workflow import Workflow

__all__ = ["watch"]

_POLL = 0.2  # seconds between status checks of `dag watch --until-done`


async def _until_terminal(wf: Workflow, dag_id: str) -> DAGMeta:
    while True:
        meta, _ = await wf.store.get_meta(dag_id)
        if meta.status.terminal:
            return meta
        await asyncio.sleep(_POLL)


async def _feed(wf: Workflow, subject: str, as_json: bool) -> None:
    tap = getattr(wf.bus, "tap", None)
    if tap is None:
        raise click.ClickException("this event bus cannot be watched (no tap())")
    async for ev in tap(subject):
        now = datetime.now(UTC)
        if as_json:
            echo_json_line({"at": now, "event": ev})
        else:
            click.echo(event_line(ev, now))
    # The CLI connects without reconnects, so the feed ends only when the connection does.
    raise click.ClickException("the event feed ended: the connection to NATS was closed")


async def _watch(app: App, dag_id: str | None, until_done: bool, as_json: bool) -> DAGMeta | None:
    wf = app.workflow
    if dag_id is not None:
        await wf.store.get_meta(dag_id)  # unknown id: a clear error, not a silent feed
    feed = asyncio.ensure_future(_feed(wf, f"DAG.{dag_id}.>" if dag_id else "DAG.>", as_json))
    try:
        if not until_done or dag_id is None:
            await feed
            return None
        done = asyncio.ensure_future(_until_terminal(wf, dag_id))
        try:
            await asyncio.wait({feed, done}, return_when=asyncio.FIRST_COMPLETED)
            if feed.done():
                feed.result()  # the feed only ends by failing; surface why
            meta = done.result()
        finally:
            done.cancel()
        await asyncio.sleep(_POLL)  # let the last events (published before the meta) print
        _finished(meta, as_json)
        return meta
    finally:
        feed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feed


def _finished(meta: DAGMeta, as_json: bool) -> None:
    now = datetime.now(UTC)
    if as_json:
        echo_json_line({"at": now, "finished": {"dag_id": meta.id, "status": meta.status.value}})
    else:
        click.echo(f"{fmt_time(now)}  DAG {meta.id}  finished  {meta.status.value}")


@click.command("watch")
@click.argument("dag_id", required=False)
@click.option("--all", "all_dags", is_flag=True, help="Watch every DAG.")
@click.option(
    "--until-done",
    is_flag=True,
    help="Exit once the DAG finishes: status 0 when done, 1 when failed or canceled.",
)
@json_option
@click.pass_context
def watch(ctx: click.Context, dag_id: str | None, all_dags: bool, until_done: bool) -> None:
    """Follow DAG events live (completions, step_added, signals, breakpoints); Ctrl-C ends.

    The feed is a plain subscription: it never takes events from the scheduler.
    """
    if (dag_id is None) == (not all_dags):
        raise click.UsageError("pass a DAG id or --all (not both)")
    if until_done and dag_id is None:
        raise click.UsageError("--until-done needs a DAG id")
    as_json = is_json(ctx)
    meta = run_async(ctx, lambda app: _watch(app, dag_id, until_done, as_json))
    if meta is not None and meta.status is not DAGStatus.DONE:
        ctx.exit(1)  # scripts waiting on a DAG learn from the exit status that it did not finish
