"""``ebind stream``: list, inspect, peek into and purge JetStream streams (KV buckets too).

Read-only commands use stream info and direct message gets; nothing here creates a
consumer or acknowledges a message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ebind.cli.output import (
    age,
    confirm,
    echo_table,
    emit,
    json_option,
    printable,
    progress,
    run_async,
    truncate,
    yes_option,
)
from ebind.errors import EbindError
from ebind.streams import TASKS_STREAM, purge_stream, subject_matches

if TYPE_CHECKING:
    from ebind.app import App

__all__ = ["human_bytes", "stream"]

T = TypeVar("T")
_BODY_WIDTH = 60
_RETENTION = {"limits": "limits", "interest": "interest", "workqueue": "workq"}


@click.group("stream")
def stream() -> None:
    """Inspect the JetStream streams ebind uses (EBIND_TASKS, EBIND_DLQ, KV_..., ...)."""


def human_bytes(n: int) -> str:
    """``512B``, ``1.5KB``, ``3.2MB`` (base 1024)."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{int(size)}B" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _retention(info: Any) -> str:
    value = getattr(info.config.retention, "value", info.config.retention)
    return _RETENTION.get(str(value), str(value or "?"))


def _summary(info: Any) -> dict[str, Any]:
    s, c = info.state, info.config
    return {
        "name": c.name,
        "messages": s.messages,
        "bytes": s.bytes,
        "consumers": s.consumer_count,
        "first_seq": s.first_seq,
        "last_seq": s.last_seq,
        "subjects": list(c.subjects or []),
        "retention": _retention(info),
    }


def _named(name: str, fn: Callable[[App], Awaitable[T]]) -> Callable[[App], Awaitable[T]]:
    """Wrap ``fn`` so a missing or malformed stream name is a clear one-line error."""

    async def run(app: App) -> T:
        from nats.js.errors import NotFoundError

        try:
            return await fn(app)
        except EbindError:
            raise
        except NotFoundError:
            raise click.ClickException(
                f"stream {name!r} not found; list streams with `ebind stream ls`"
            ) from None
        except ValueError as exc:  # nats-py rejects names with dots, spaces, wildcards
            raise click.ClickException(f"bad stream name {name!r}: {exc}") from None

    return run


@stream.command("ls")
@json_option
@click.pass_context
def ls(ctx: click.Context) -> None:
    """List every stream on the server with message, byte and consumer counts."""

    async def run(app: App) -> list[dict[str, Any]]:
        infos = await app.js.streams_info()
        return sorted((_summary(i) for i in infos), key=lambda r: r["name"])

    emit(ctx, run_async(ctx, run), _ls_table)


def _ls_table(rows: list[dict[str, Any]]) -> None:
    echo_table(
        ["NAME", "MSGS", "BYTES", "CONS", "FIRST", "LAST", "SUBJECTS", "RETENTION"],
        [
            [
                r["name"],
                str(r["messages"]),
                human_bytes(r["bytes"]),
                str(r["consumers"]),
                str(r["first_seq"]),
                str(r["last_seq"]),
                _subjects(r["subjects"]),
                r["retention"],
            ]
            for r in rows
        ],
    )


def _subjects(subjects: list[str]) -> str:
    if not subjects:
        return "-"
    return subjects[0] + (f" (+{len(subjects) - 1})" if len(subjects) > 1 else "")


def _consumer(ci: Any) -> dict[str, Any]:
    cfg = ci.config
    return {
        "name": ci.name,
        "durable": bool(cfg.durable_name),
        "filter": cfg.filter_subject or ", ".join(cfg.filter_subjects or []) or "",
        "num_pending": ci.num_pending or 0,
        "num_ack_pending": ci.num_ack_pending or 0,
        "num_redelivered": ci.num_redelivered or 0,
        "num_waiting": ci.num_waiting or 0,
    }


@stream.command("info")
@click.argument("name")
@json_option
@click.pass_context
def info(ctx: click.Context, name: str) -> None:
    """Show a stream: config summary, state, and its consumers' pending counts."""

    async def run(app: App) -> dict[str, Any]:
        si = await app.js.stream_info(name)
        consumers = await app.js.consumers_info(name)
        row = _summary(si)
        row["storage"] = str(getattr(si.config.storage, "value", si.config.storage))
        row["replicas"] = si.config.num_replicas or 1
        row["max_age_seconds"] = si.config.max_age or 0
        row["consumer_info"] = sorted((_consumer(c) for c in consumers), key=lambda c: c["name"])
        return row

    emit(ctx, run_async(ctx, _named(name, run)), _info)


def _info(row: dict[str, Any]) -> None:
    click.echo(f"Stream {row['name']}")
    for key in ("messages", "bytes", "first_seq", "last_seq", "retention", "storage", "replicas"):
        value = human_bytes(row[key]) if key == "bytes" else row[key]
        click.echo(f"  {(key + ':').ljust(11)} {value}")
    subjects = printable(", ".join(row["subjects"]) or "-")  # the server takes any bytes
    click.echo(f"  {'subjects:'.ljust(11)} {subjects}")
    click.echo("")
    if not row["consumer_info"]:
        click.echo("  no consumers")
        return
    echo_table(
        ["  CONSUMER", "DURABLE", "PENDING", "ACK-PENDING", "REDELIVERED", "WAITING", "FILTER"],
        [
            [
                "  " + c["name"],
                "yes" if c["durable"] else "no",
                str(c["num_pending"]),
                str(c["num_ack_pending"]),
                str(c["num_redelivered"]),
                str(c["num_waiting"]),
                c["filter"] or "-",
            ]
            for c in row["consumer_info"]
        ],
    )


async def _peek(app: App, name: str, last: int, subject: str | None) -> list[dict[str, Any]]:
    from nats.js.errors import NotFoundError

    si = await app.js.stream_info(name)
    out: list[dict[str, Any]] = []
    seq, first = int(si.state.last_seq or 0), int(si.state.first_seq or 0)
    with progress(min(last, max(seq - first + 1, 0)), f"reading {name}") as advance:
        # Walk back from the newest message; deleted sequences (work queues) are skipped.
        while seq >= max(first, 1) and len(out) < last:
            try:
                msg = await app.js.get_msg(name, seq=seq)
            except NotFoundError:
                seq -= 1
                continue
            seq -= 1
            if subject is not None and not subject_matches(subject, msg.subject or ""):
                continue
            out.append(_message(msg))
            advance(1)
    out.reverse()
    return out


def _message(msg: Any) -> dict[str, Any]:
    data = bytes(msg.data or b"")
    return {
        "seq": msg.seq,
        "subject": msg.subject,
        "time": msg.time.astimezone(UTC).isoformat() if msg.time else None,
        "size": len(data),
        # nats-py reads a non-ASCII value as an email Header object: plain text for JSON.
        "headers": {str(k): str(v) for k, v in (msg.headers or {}).items()},
        "data": data.decode(errors="replace"),
    }


@stream.command("peek")
@click.argument("name")
@click.option(
    "--last",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Show this many of the newest messages.",
)
@click.option("--subject", default=None, help="Only messages on this subject (wildcards ok).")
@json_option
@click.pass_context
def peek(ctx: click.Context, name: str, last: int, subject: str | None) -> None:
    """Show the last messages of a stream (read-only: nothing is consumed or acked)."""
    rows = run_async(ctx, _named(name, lambda app: _peek(app, name, last, subject)))
    emit(ctx, rows, lambda found: _peek_table(name, found))


def _peek_table(name: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo(f"{name}: no messages")
        return
    now = datetime.now(UTC)
    echo_table(
        ["SEQ", "AGE", "SUBJECT", "SIZE", "BODY"],
        [
            [
                str(r["seq"]),
                age(datetime.fromisoformat(r["time"]), now) if r["time"] else "-",
                r["subject"],
                human_bytes(r["size"]),
                truncate(r["data"], _BODY_WIDTH),
            ]
            for r in rows
        ],
    )


@stream.command("purge")
@click.argument("name")
@click.option("--subject", default=None, help="Purge only this subject.")
@click.option(
    "--delayed", is_flag=True, help="EBIND_TASKS: also remove countdown/eta tasks not yet due."
)
@click.option("--schedules", is_flag=True, help="EBIND_TASKS: also remove periodic schedules.")
@yes_option
@json_option
@click.pass_context
def purge(
    ctx: click.Context, name: str, subject: str | None, delayed: bool, schedules: bool, yes: bool
) -> None:
    """Delete every message of a stream (or of one subject in it).

    EBIND_TASKS: only queued tasks, unless --delayed / --schedules ask for more. Each
    task removed is dead-lettered first (kind purged, raw bytes kept) and its waiter
    gets TaskFailed; a task a worker holds is running and is kept. The output says how
    many of each kind were removed, dead-lettered and kept.
    """
    # --- EBIND_TASKS holds delayed tasks and schedules too (ebind/cli/tasks_purge.py) ---
    if name == TASKS_STREAM and subject is None:
        _purge_tasks(ctx, delayed=delayed, schedules=schedules, yes=yes)
        return
    if delayed or schedules:
        raise click.UsageError(f"--delayed / --schedules apply to {TASKS_STREAM} only")
    what = f"subject {subject} from {name}" if subject else f"all messages from {name}"
    confirm(f"Purge {what}?", yes)

    async def run(app: App) -> int:
        before = (await app.js.stream_info(name)).state.messages
        await purge_stream(app.js, name, subject)
        after = (await app.js.stream_info(name)).state.messages
        return int(before - after)

    emit(
        ctx,
        run_async(ctx, _named(name, run)),
        lambda n: click.echo(f"purged {n} messages from {name}"),
        lambda n: {"stream": name, "purged": n},
    )


def _purge_tasks(ctx: click.Context, *, delayed: bool, schedules: bool, yes: bool) -> None:
    from ebind.cli.tasks_purge import plan, purge_tasks, render, snapshot

    remove, keep = plan(delayed=delayed, schedules=schedules)
    # Count and bound first, then ask: tasks queued after the question are not part of
    # the answer, and the count sizes the progress bar (one record per task).
    counted = run_async(ctx, lambda app: snapshot(app, delayed=delayed))
    if counted is None:
        return  # interrupted
    total, last = counted
    confirm(
        f"Purge {' and '.join(remove)} from {TASKS_STREAM} "
        f"(keeping {', '.join(keep) or 'nothing'})?",
        yes,
    )

    async def run(app: App) -> Any:
        with progress(total, "purging") as advance:
            return await purge_tasks(
                app, delayed=delayed, schedules=schedules, up_to=last, on_each=advance
            )

    emit(
        ctx,
        run_async(ctx, run),
        lambda r: click.echo(render(r)),
        lambda r: r.as_json(),
    )


@stream.command("provision")
@click.option(
    "--replicas",
    type=click.IntRange(1, 5),
    default=1,
    show_default=True,
    help="Replicas of each stream and bucket created (3 in a cluster; never lowered).",
)
@json_option
@click.pass_context
def provision(ctx: click.Context, replicas: int) -> None:
    """Create every ebind stream and KV bucket (run once with operator rights).

    Producers and workers whose NATS users may not create streams then find them ready.
    """

    async def run(app: App) -> list[str]:
        from ebind.permissions import EBIND_STREAMS
        from ebind.streams import ensure_streams

        await ensure_streams(app.js, replicas, app.retention)
        return list(EBIND_STREAMS)

    emit(
        ctx,
        run_async(ctx, run),
        lambda names: click.echo(f"provisioned {len(names)} streams: {', '.join(names)}"),
        lambda names: {"streams": names, "replicas": replicas},
    )
