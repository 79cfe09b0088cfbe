"""``ebind dag``: inspect and operate DAG workflows (ls, get, tree, watch, step, control).

Signals and breakpoints live in ``ebind.cli.dag_ops``, the live feed in
``ebind.cli.dag_watch``, text layouts in ``ebind.cli.dag_render``; every command connects through
``run_async`` so errors end as one line on stderr.
"""

from __future__ import annotations

from datetime import UTC, datetime
from io import StringIO
from typing import TYPE_CHECKING, Any

import click

from ebind.cli.dag_ops import bp, signal
from ebind.cli.dag_progress import progress_lines, step_progress
from ebind.cli.dag_render import step_counts, step_detail_lines, steps_cell, tree_lines
from ebind.cli.dag_watch import watch
from ebind.cli.output import (
    age,
    confirm,
    echo_json,
    echo_table,
    emit,
    is_json,
    json_option,
    parse_since,
    progress,
    run_async,
    status_style,
    to_builtins,
    yes_option,
)
from ebind.errors import DAGNotFound, InvalidArguments, RecordCorrupt, StepNotFound
from ebind.progress import Progress
from ebind.retention import parse_duration
from ebind.workflow.debug import (
    DAGDebug,
    compute_breakpoints,
    compute_signals,
    count_blocked,
    write_debug,
)
from ebind.workflow.debug import count_waiting_steps as count_waiting
from ebind.workflow.history import CollectReport, collect
from ebind.workflow.types import BPState, DAGMeta, DAGStatus, StepRecord, StepStatus

if TYPE_CHECKING:
    from ebind.app import App
    from ebind.workflow.workflow import Workflow

__all__ = ["dag"]


@click.group("dag")
def dag() -> None:
    """Inspect and operate DAG workflows."""


dag.add_command(signal)
dag.add_command(bp)
dag.add_command(watch)


# --- ls -------------------------------------------------------------------------------


async def _summary(wf: Workflow, meta: DAGMeta) -> dict[str, Any]:
    recs = [r for r, _ in await wf.store.list_steps(meta.id)]
    blocked = count_blocked(compute_breakpoints(meta, recs))
    waiting = 0
    # Signals are read only when some pending step waits for one (most DAGs: no read).
    if any(r.wait_signals and r.status is StepStatus.PENDING for r in recs):
        sigs = await wf.store.list_signals(meta.id)
        waiting = count_waiting(compute_signals(meta, recs, sigs))
    return {
        "id": meta.id,
        "status": meta.status.value,
        "created_at": to_builtins(meta.created_at),
        "labels": list(meta.labels),
        "steps": step_counts(recs),
        "at_breakpoint": blocked,
        "waiting_on_signal": waiting,
    }


def _status_filter(value: str | None) -> DAGStatus | None:
    if value is None:
        return None
    try:
        return DAGStatus(value.lower())
    except ValueError:
        choices = ", ".join(s.value for s in DAGStatus)
        raise click.BadParameter(f"unknown status {value!r}; use one of {choices}") from None


@dag.command("ls")
@click.option("--label", "labels", multiple=True, help="Only DAGs with this label (repeat: AND).")
@click.option("--status", default=None, help="Only DAGs in this status (running, done, ...).")
@click.option("--sig-waiting", is_flag=True, help="Only DAGs with steps waiting on a signal.")
@click.option("--bp-blocked", is_flag=True, help="Only DAGs stopped at a breakpoint.")
@click.option(
    "--since",
    metavar="WHEN",
    help="Only DAGs created in the last 30m, 2h, 7d, ... or since an ISO time (UTC "
    "unless it has an offset).",
)
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True, help="0: all.")
@json_option
@click.pass_context
def ls(
    ctx: click.Context,
    labels: tuple[str, ...],
    status: str | None,
    sig_waiting: bool,
    bp_blocked: bool,
    since: str | None,
    limit: int,
) -> None:
    """List DAGs, newest first, with step counts and ⦿ breakpoint / ⚑ signal badges."""
    want = _status_filter(status)
    after = parse_since(since) if since is not None else None

    def keep(m: DAGMeta) -> bool:
        if want is not None and m.status is not want:
            return False
        # A DAG with no creation time (written by another tool) is not known to be recent.
        return after is None or (m.created_at is not None and m.created_at >= after)

    async def run(app: App) -> list[dict[str, Any]]:
        wf = app.workflow
        metas = [m for m in await wf.list_dags(labels, want) if keep(m)]
        rows: list[dict[str, Any]] = []
        with progress(len(metas), "reading DAGs") as advance:
            for meta in metas:
                row = await _summary(wf, meta)
                advance(1)
                if (sig_waiting and not row["waiting_on_signal"]) or (
                    bp_blocked and not row["at_breakpoint"]
                ):
                    continue
                rows.append(row)
                if limit and len(rows) >= limit:
                    break
        return rows

    emit(ctx, run_async(ctx, run), _ls_table)


def _ls_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo("no DAGs")
        return
    now = datetime.now(UTC)
    echo_table(["ID", "STATUS", "STEPS", "LABELS", "AGE"], [_ls_row(r, now) for r in rows])


def _ls_row(row: dict[str, Any], now: datetime) -> list[str]:
    created = datetime.fromisoformat(row["created_at"]) if row["created_at"] else None
    return [
        row["id"],
        status_style(row["status"]),
        steps_cell(row["steps"], row["at_breakpoint"], row["waiting_on_signal"]),
        ", ".join(row["labels"]) or "-",
        age(created, now),
    ]


# --- get / tree -----------------------------------------------------------------------


@dag.command("get")
@click.argument("dag_id")
@json_option
@click.pass_context
def get(ctx: click.Context, dag_id: str) -> None:
    """Show the debug report of a DAG: steps, durations, blockers, breakpoints, signals."""

    def render(got: tuple[DAGDebug, dict[str, Progress]]) -> None:
        dbg, found = got
        buf = StringIO()
        write_debug(buf, dbg)
        click.echo(buf.getvalue(), nl=False)
        for line in progress_lines(found):
            click.echo(line)

    async def run(app: App) -> tuple[DAGDebug, dict[str, Progress]]:
        dbg = await app.workflow.debug(dag_id)
        running = [s.record.step_id for s in dbg.steps if s.record.status is StepStatus.RUNNING]
        return dbg, await step_progress(app, dag_id, running)

    emit(ctx, run_async(ctx, run), render, lambda got: got[0])


@dag.command("tree")
@click.argument("dag_id")
@json_option
@click.pass_context
def tree(ctx: click.Context, dag_id: str) -> None:
    """Draw the DAG as a tree: roots at the top, children indented under each parent."""

    async def run(app: App) -> _TreeData:
        meta, recs = await app.workflow.info(dag_id)
        running = [r.step_id for r in recs if r.status is StepStatus.RUNNING]
        return meta, recs, await step_progress(app, dag_id, running)

    emit(ctx, run_async(ctx, run), _tree, _tree_json)


_TreeData = tuple[DAGMeta, list[StepRecord], dict[str, Progress]]


def _tree(got: _TreeData) -> None:
    meta, recs, found = got
    blocked = {i.step_id for i in compute_breakpoints(meta, recs) if i.state is BPState.BLOCKED}
    for line in [*tree_lines(meta, recs, blocked), *progress_lines(found)]:
        click.echo(line)


def _tree_json(got: _TreeData) -> dict[str, Any]:
    meta, recs, _found = got
    steps = [
        {
            "id": r.step_id,
            "status": r.status.value,
            "deps": list(r.deps),
            "optional_deps": list(r.optional_deps),
        }
        for r in recs
    ]
    return {"dag": meta, "steps": steps}


# --- step -----------------------------------------------------------------------------


@dag.group("step")
def step() -> None:
    """Inspect one step of a DAG."""


@step.command("get")
@click.argument("dag_id")
@click.argument("step_id")
@json_option
@click.pass_context
def step_get(ctx: click.Context, dag_id: str, step_id: str) -> None:
    """Show a step record: status, attempt, times, worker, error, deps, args."""

    async def run(app: App) -> tuple[StepRecord, int]:
        await app.workflow.store.get_meta(dag_id)
        return await app.workflow.store.get_step(dag_id, step_id)

    def render(got: tuple[StepRecord, int]) -> None:
        for line in step_detail_lines(got[0], got[1], datetime.now(UTC)):
            click.echo(line)

    emit(ctx, run_async(ctx, run), render, lambda got: {**to_builtins(got[0]), "revision": got[1]})


def _no_result(rec: StepRecord) -> str:
    where = f"no result for {rec.dag_id}/{rec.step_id}"
    if rec.status is StepStatus.FAILED:
        err = ": ".join(p for p in (rec.error_kind, rec.error_message) if p)
        return f"{where}: step failed ({err or 'no error recorded'})"
    if rec.status in (StepStatus.SKIPPED, StepStatus.CANCELED):
        return f"{where}: step was {rec.status.value}"
    return f"{where}: step is {rec.status.value} (not done yet)"


@step.command("result")
@click.argument("dag_id")
@click.argument("step_id")
@click.pass_context
def step_result(ctx: click.Context, dag_id: str, step_id: str) -> None:
    """Print a done step's result (JSON, as stored)."""

    async def run(app: App) -> bytes:
        store = app.workflow.store
        await store.get_meta(dag_id)
        rec, _ = await store.get_step(dag_id, step_id)
        try:
            return await store.get_result(dag_id, step_id, rec.run_id)
        except StepNotFound:
            raise click.ClickException(_no_result(rec)) from None

    raw = run_async(ctx, run)
    if raw is not None:
        click.echo(raw.decode(errors="replace"))


# --- control --------------------------------------------------------------------------


@dag.command("cancel")
@click.argument("dag_id")
@yes_option
@json_option
@click.pass_context
def cancel(ctx: click.Context, dag_id: str, yes: bool) -> None:
    """Cancel a DAG: pending steps are canceled now, running ones may finish."""
    confirm(f"Cancel DAG {dag_id}?", yes)
    run_async(ctx, lambda app: app.workflow.cancel(dag_id))
    _report(ctx, "canceled", dag_id)


@dag.command("pause")
@click.argument("dag_id")
@json_option
@click.pass_context
def pause(ctx: click.Context, dag_id: str) -> None:
    """Pause a running DAG (running steps finish; nothing new starts)."""

    async def run(app: App) -> str:
        await app.workflow.pause(dag_id)
        meta, _ = await app.workflow.store.get_meta(dag_id)
        return meta.status.value

    status = run_async(ctx, run)
    if status is not None:
        _report(ctx, status, dag_id)


@dag.command("resume")
@click.argument("dag_id")
@json_option
@click.pass_context
def resume(ctx: click.Context, dag_id: str) -> None:
    """Resume a paused DAG."""
    run_async(ctx, lambda app: app.workflow.resume(dag_id))
    _report(ctx, "resumed", dag_id)


@dag.command("rm")
@click.argument("dag_id")
@click.option("--finished-only", is_flag=True, help="Refuse unless the DAG has finished.")
@yes_option
@json_option
@click.pass_context
def rm(ctx: click.Context, dag_id: str, finished_only: bool, yes: bool) -> None:
    """Delete a DAG with all its steps, results and signals."""
    got = run_async(ctx, lambda app: _meta_or_problem(app, dag_id))
    if got is None:
        return
    meta, problem = got
    if meta is None:
        if problem and finished_only:
            raise click.ClickException(f"refusing to rm {dag_id} with --finished-only: {problem}")
        if problem:
            confirm(f"{problem}\nDelete every record of DAG {dag_id}?", yes)
        # Without a meta the records left under the id are removed all the same; a DAG
        # that never existed still ends in "not found".
        run_async(ctx, lambda app: app.workflow.delete_dag(dag_id, force=True))
        _report(ctx, "deleted", dag_id)
        return
    if finished_only and not meta.status.terminal:
        raise click.ClickException(
            f"refusing to rm {dag_id} (status={meta.status.value}); "
            "pass without --finished-only to force"
        )
    question = f"Delete DAG {dag_id} (status={meta.status.value}) and all its records?"
    if not meta.status.terminal:
        question = f"Cancel DAG {dag_id} (status={meta.status.value}), wait for its running "
        question += "steps, and delete all its records?"
    confirm(question, yes)
    run_async(ctx, lambda app: app.workflow.delete_dag(dag_id, force=True))
    _report(ctx, "deleted", dag_id)


@dag.command("retry")
@click.argument("dag_id")
@click.option("--step", "step_id", default=None, help="Retry this step only (and what it skipped).")
@json_option
@click.pass_context
def retry(ctx: click.Context, dag_id: str, step_id: str | None) -> None:
    """Run the failed steps of a DAG again, with the steps skipped because of them."""

    async def run(app: App) -> list[str]:
        if step_id is None:
            return await app.workflow.retry(dag_id)
        return await app.workflow.retry_step(dag_id, step_id)

    emit(
        ctx,
        run_async(ctx, run),
        lambda steps: click.echo(f"retrying {len(steps)} step(s) of {dag_id}: {', '.join(steps)}"),
        lambda steps: {"dag_id": dag_id, "result": "retrying", "steps": steps},
    )


@dag.command("gc")
@click.option(
    "--older-than",
    "older_than",
    required=True,
    metavar="AGE",
    help="Remove DAGs that finished at least this long ago (30d, 12h, 90m, seconds).",
)
@click.option("--dry-run", is_flag=True, help="Only count what would be removed.")
@yes_option
@json_option
@click.pass_context
def gc(ctx: click.Context, older_than: str, dry_run: bool, yes: bool) -> None:
    """Remove finished DAGs (meta, steps, results, signals) older than --older-than."""
    try:
        seconds = parse_duration(older_than, what="--older-than")
    except InvalidArguments as exc:
        raise click.BadParameter(str(exc).removeprefix("--older-than: ")) from None
    if not dry_run:
        confirm(f"Remove every DAG that finished more than {older_than} ago?", yes)

    async def run(app: App) -> CollectReport:
        store = app.workflow.store
        metas = await store.list_dags()
        with progress(len(metas), "collecting DAG history") as advance:
            return await collect(store, seconds, dry_run=dry_run, on_each=advance, metas=metas)

    def render(r: CollectReport) -> None:
        verb = "would remove" if dry_run else "removed"
        click.echo(f"{verb} {len(r.removed)} of {r.examined} DAGs finished over {older_than} ago")
        if r.failed:
            click.echo(
                f"could not examine {len(r.failed)} (logged; run again): {', '.join(r.failed)}"
            )

    emit(
        ctx,
        run_async(ctx, run),
        render,
        lambda r: {
            "examined": r.examined,
            "removed": r.removed,
            "failed": r.failed,
            "dry_run": dry_run,
            "older_than_seconds": seconds,
        },
    )


async def _meta(app: App, dag_id: str) -> DAGMeta:
    meta, _ = await app.workflow.store.get_meta(dag_id)
    return meta


async def _meta_or_problem(app: App, dag_id: str) -> tuple[DAGMeta | None, str]:
    """The DAG's meta, or None with why it cannot be used ("" when there is none)."""
    try:
        return await _meta(app, dag_id), ""
    except DAGNotFound:
        return None, ""
    except RecordCorrupt as exc:
        return None, str(exc)


def _report(ctx: click.Context, what: str, dag_id: str) -> None:
    if is_json(ctx):
        echo_json({"dag_id": dag_id, "result": what})
    else:
        click.echo(f"{what} {dag_id}")
