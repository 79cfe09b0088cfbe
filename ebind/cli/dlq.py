"""``ebind dlq``: list, show, requeue, purge and watch dead letters (stream EBIND_DLQ)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
import msgspec

from ebind.cli.output import (
    age,
    confirm,
    echo_json_line,
    echo_table,
    emit,
    is_json,
    json_option,
    printable,
    progress,
    run_async,
    style,
    to_builtins,
    truncate,
    yes_option,
)
from ebind.errors import InvalidName
from ebind.streams import check_task_name
from ebind.wire import DLQEntry

if TYPE_CHECKING:
    from ebind.app import App
    from ebind.dlq import DeadLetter, RequeueReport

__all__ = ["dlq"]

_ERROR_WIDTH = 60
_decoder = msgspec.json.Decoder(DLQEntry)


@click.group("dlq")
def dlq() -> None:
    """Inspect and act on dead letters (tasks that failed for good)."""


def _row(letter: DeadLetter) -> dict[str, Any]:
    e = letter.entry
    return {
        "seq": letter.seq,
        "fn": e.task.name if e.task else "",
        "task_id": e.task.id if e.task else "",
        "dag_id": e.task.dag_id if e.task else "",
        "step_id": e.task.step_id if e.task else "",
        "error_kind": e.error.kind,
        "error_message": e.error.message,
        "final_attempt": e.final_attempt,
        "dead_at": to_builtins(e.dead_lettered_at),
    }


@dlq.command("ls")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Show at most this many dead letters.",
)
@json_option
@click.pass_context
def ls(ctx: click.Context, limit: int) -> None:
    """List dead letters, oldest first."""
    letters = run_async(ctx, lambda app: app.dlq.list(limit))
    emit(ctx, None if letters is None else [_row(x) for x in letters], _ls_table)


def _ls_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo("DLQ is empty")
        return
    now = datetime.now(UTC)
    echo_table(
        ["SEQ", "FN", "ERROR", "ATTEMPT", "AGE", "TASK-ID"],
        [
            [
                str(r["seq"]),
                r["fn"] or "?",
                style(truncate(f"{r['error_kind']}: {r['error_message']}", _ERROR_WIDTH), fg="red"),
                str(r["final_attempt"]),
                age(datetime.fromisoformat(r["dead_at"]), now),
                r["task_id"] or "-",
            ]
            for r in rows
        ],
    )


@dlq.command("show")
@click.argument("seq", type=click.IntRange(min=1))
@json_option
@click.pass_context
def show(ctx: click.Context, seq: int) -> None:
    """Show one dead letter: task, error, attempts, payload."""
    emit(
        ctx,
        run_async(ctx, lambda app: app.dlq.show(seq)),
        _show,
        lambda x: {"seq": x.seq, "subject": x.subject, **to_builtins(x.entry)},
    )


def _show(letter: DeadLetter) -> None:
    e, t = letter.entry, letter.entry.task
    lines = [
        ("fn", t.name if t else "?"),
        ("task_id", t.id if t else "-"),
        ("target", (t.target if t else "") or "-"),
        ("dag/step", f"{t.dag_id}/{t.step_id}" if t and t.dag_id else "-"),
        ("final_attempt", str(e.final_attempt)),
        ("dead_at", e.dead_lettered_at.isoformat()),
        ("error_kind", e.error.kind),
        ("error_message", e.error.message),
        ("retryable", str(e.error.retryable).lower()),
        ("payload", bytes(t.payload).decode(errors="replace") if t else repr(e.raw)),
    ]
    if e.raw_headers:  # a refused message's header block, as received
        lines.append(("raw_headers", repr(e.raw_headers)))
    # Parts cut so the entry fit the server's max_payload (size and digest of each).
    lines += [("left_out", part) for part in e.left_out]
    click.echo(f"DLQ seq {letter.seq}")
    for key, value in lines:
        # Every value was read from a record others may write: no escape sequence passes.
        click.echo(f"  {(key + ':').ljust(15)}{printable(value)}")


@dlq.command("requeue")
@click.argument("seq", type=click.IntRange(min=1), required=False)
@click.option("--all", "all_", is_flag=True, help="Requeue every dead letter.")
@click.option("--fn", "fn", metavar="NAME", help="With --all: only dead letters of this task.")
@yes_option
@json_option
@click.pass_context
def requeue(ctx: click.Context, seq: int | None, all_: bool, fn: str | None, yes: bool) -> None:
    """Publish dead tasks again (attempts reset) and remove their dead letters.

    Give one SEQ (from `ebind dlq ls`), or --all (optionally with --fn NAME). A DAG step
    is retried through its DAG (as `ebind dag retry DAG --step S`); its dead letter is
    removed once the scheduler has dispatched the rerun.
    """
    if (seq is None) == (not all_):
        raise click.UsageError("give either one SEQ or --all")
    if fn is not None and not all_:
        raise click.UsageError("--fn only goes with --all")
    if seq is not None:
        confirm(f"Requeue DLQ seq {seq}?", yes)
        emit(
            ctx,
            run_async(ctx, lambda app: app.dlq.requeue(seq)),
            lambda task_id: click.echo(f"requeued seq {seq} (task {task_id})"),
            lambda task_id: {"seq": seq, "task_id": task_id, "requeued": True},
        )
        return
    if fn is not None:
        try:
            check_task_name(fn)
        except InvalidName as exc:
            raise click.BadParameter(str(exc), param_hint="--fn") from None
    # Count and bound first, ask with no connection held open, then requeue up to the
    # bound: entries dead-lettered after the question are not part of the answer.
    snapshot = run_async(ctx, lambda app: _snapshot(app, fn))
    if snapshot is None:
        return
    total, last = snapshot
    what = f"dead letters of {fn!r}" if fn else "dead letters"
    confirm(f"Requeue all {total} {what}?", yes)

    async def go(app: App) -> RequeueReport:
        with progress(total, "requeueing") as advance:
            return await app.dlq.requeue_all(fn, up_to=last, on_each=lambda _seq: advance(1))

    emit(ctx, run_async(ctx, go), _show_report, _report_json)


async def _snapshot(app: App, fn: str | None) -> tuple[int, int]:
    return await app.dlq.count(fn), await app.dlq.last_seq()


def _show_report(report: RequeueReport) -> None:
    click.echo(f"requeued {len(report.task_ids)} dead letters")
    _left(report.skipped, "undecodable entries", "inspect them with `ebind stream peek EBIND_DLQ`")
    _left(
        report.kept,
        "DAG step entries",
        "not retryable or not dispatched yet; see `ebind dlq requeue <seq>` for why",
    )
    _left(
        [seq for seq, _ in report.failed],
        "entries whose task could not be queued",
        "see `ebind dlq requeue <seq>` for why",
    )


def _left(seqs: list[int], what: str, hint: str) -> None:
    if seqs:
        shown = ", ".join(map(str, seqs[:10]))
        more = " ..." if len(seqs) > 10 else ""
        click.echo(f"left {len(seqs)} {what} in place (seq {shown}{more}); {hint}")


def _report_json(report: RequeueReport) -> dict[str, Any]:
    return {
        "requeued": report.task_ids,
        "skipped": report.skipped,
        "kept": report.kept,
        "failed": [{"seq": seq, "error": why} for seq, why in report.failed],
    }


@dlq.command("purge")
@yes_option
@json_option
@click.pass_context
def purge(ctx: click.Context, yes: bool) -> None:
    """Delete every dead letter stored when the command starts."""
    confirm("Purge the entire DLQ?", yes)
    emit(
        ctx,
        run_async(ctx, lambda app: app.dlq.purge()),
        lambda n: click.echo(f"DLQ purged ({n} entries)"),
        lambda n: {"purged": n},
    )


def _watch_line(subject: str, data: bytes, now: datetime) -> tuple[str, Any]:
    stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    try:
        e = _decoder.decode(data)
    except Exception as exc:  # any bytes at all: a RecursionError from deep nesting too
        text = printable(f"{subject}  undecodable: {exc}")
        return f"{stamp}  {text}", {"at": now, "subject": subject}
    fn = printable(e.task.name if e.task else "?")
    err = printable(truncate(f"{e.error.kind}: {e.error.message}", 100))
    line = f"{stamp}  fn={fn}  err={style(err, fg='red')}  attempts={e.final_attempt}"
    if e.task is not None:
        line += f"  task={printable(e.task.id)}"
    return line, {"at": now, "subject": subject, "entry": e}


async def _watch(app: App, as_json: bool) -> None:
    # A core subscription sees each dead letter as it is published and takes nothing.
    sub = await app.nc.subscribe("DLQ.>")
    await app.nc.flush()  # the server has the subscription: nothing published from now is missed
    click.echo("watching for new dead letters (Ctrl-C to stop)", err=True)
    try:
        async for msg in sub.messages:
            line, obj = _watch_line(msg.subject, msg.data, datetime.now(UTC))
            if as_json:
                echo_json_line(obj)
            else:
                click.echo(line)
    finally:
        await sub.unsubscribe()


@dlq.command("watch")
@json_option
@click.pass_context
def watch(ctx: click.Context) -> None:
    """Print new dead letters as they arrive (Ctrl-C ends)."""
    as_json = is_json(ctx)
    run_async(ctx, lambda app: _watch(app, as_json))
