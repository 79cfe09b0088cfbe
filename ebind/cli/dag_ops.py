"""``ebind dag signal`` and ``ebind dag bp``: deliver signals, release breakpoints, list both.

``ebind dag signal <dag> <name> [json]`` sends (as the workflow API names it) while
``ebind dag signal ls <dag>`` lists: the group treats any first word that is not one of
its subcommands as the start of a ``send``. (A DAG literally named ``ls`` or ``send``
needs the explicit form ``ebind dag signal send ls <name>``.)
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from ebind.cli.output import (
    age,
    echo_table,
    emit,
    json_option,
    run_async,
    truncate,
)
from ebind.workflow.debug import BreakpointInfo, SignalInfo
from ebind.workflow.types import BPState

if TYPE_CHECKING:
    from ebind.app import App

__all__ = ["DefaultGroup", "bp", "signal"]

_PAYLOAD_WIDTH = 40


class DefaultGroup(click.Group):
    """A group that runs ``default_cmd`` when the first word is not a subcommand."""

    def __init__(self, *args: Any, default_cmd: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default_cmd = default_cmd

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Insert the default subcommand in front of arguments that name none."""
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = [self.default_cmd, *args]
        return super().parse_args(ctx, args)


@click.group("signal", cls=DefaultGroup, default_cmd="send")
def signal() -> None:
    """Send a signal (DAG NAME [JSON]) or list them (ls DAG)."""


def _payload(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise click.BadParameter(
            f"payload is not valid JSON: {text!r} (quote strings: '\"text\"')",
            param_hint="PAYLOAD",
        ) from None
    except RecursionError:
        raise click.BadParameter(
            "the JSON nests too deeply to read", param_hint="PAYLOAD"
        ) from None


@signal.command("send")
@click.argument("dag_id")
@click.argument("name")
@click.argument("payload", required=False)
@json_option
@click.pass_context
def send(ctx: click.Context, dag_id: str, name: str, payload: str | None) -> None:
    """Deliver signal NAME with a JSON PAYLOAD (absent: null); first delivery wins."""
    value = _payload(payload)

    async def run(app: App) -> tuple[bool, str]:
        delivered = await app.workflow.signal(dag_id, name, value)
        meta, _ = await app.workflow.store.get_meta(dag_id)
        return delivered, meta.status.value

    def render(got: tuple[bool, str]) -> None:
        delivered, status = got
        if delivered:
            click.echo(f'delivered signal "{name}" to {dag_id}')
        elif status in ("done", "failed", "canceled"):
            click.echo(f'not delivered: DAG {dag_id} is {status}; signal "{name}" dropped')
        else:
            click.echo(f'duplicate: signal "{name}" was already delivered to {dag_id} (first kept)')

    emit(
        ctx,
        run_async(ctx, run),
        render,
        lambda got: {"dag_id": dag_id, "name": name, "delivered": got[0]},
    )


@signal.command("ls")
@click.argument("dag_id")
@json_option
@click.pass_context
def signal_ls(ctx: click.Context, dag_id: str) -> None:
    """List a DAG's signals: delivered or awaited, when, who waits, the payload."""
    emit(ctx, run_async(ctx, lambda app: app.workflow.list_signals(dag_id)), _signal_table)


def _signal_table(infos: list[SignalInfo]) -> None:
    if not infos:
        click.echo("no signals referenced or delivered")
        return
    now = datetime.now(UTC)
    echo_table(
        ["NAME", "DELIVERED", "AT", "WAITING", "PAYLOAD"],
        [
            [
                i.name,
                "yes" if i.delivered else "no",
                f"{age(i.delivered_at, now)} ago" if i.delivered_at else "-",
                ", ".join(i.waiting) or "-",
                truncate(bytes(i.payload).decode(errors="replace"), _PAYLOAD_WIDTH)
                if i.payload is not None
                else "-",
            ]
            for i in infos
        ],
    )


@click.group("bp")
def bp() -> None:
    """List and release breakpoints of a DAG."""


@bp.command("ls")
@click.argument("dag_id")
@json_option
@click.pass_context
def bp_ls(ctx: click.Context, dag_id: str) -> None:
    """List declared breakpoints: position, labels, armed, blocked/released, holding."""
    emit(ctx, run_async(ctx, lambda app: app.workflow.list_breakpoints(dag_id)), _bp_table)


def _bp_table(infos: list[BreakpointInfo]) -> None:
    if not infos:
        click.echo("no breakpoints declared")
        return
    now = datetime.now(UTC)
    echo_table(
        ["STEP", "POS", "LABELS", "ARMED", "STATE", "SINCE", "HOLDING"],
        [
            [
                i.step_id,
                i.position,
                ",".join(i.labels),
                "yes" if i.armed else "no",
                i.state.value or "-",
                age(i.blocked_since, now)
                if i.state is BPState.BLOCKED and i.blocked_since
                else "-",
                ",".join(i.holding) or "-",
            ]
            for i in infos
        ],
    )


@bp.command("resume")
@click.argument("dag_id")
@click.argument("label")
@json_option
@click.pass_context
def bp_resume(ctx: click.Context, dag_id: str, label: str) -> None:
    """Release the breakpoints labelled LABEL where the DAG stopped (the label stays armed)."""
    emit(
        ctx,
        run_async(ctx, lambda app: app.workflow.resume_breakpoint(dag_id, label)),
        lambda n: click.echo(f'released {n} breakpoint(s) for label "{label}" in {dag_id}'),
        lambda n: {"dag_id": dag_id, "label": label, "released": n},
    )
