"""``ebind send TASK [ARGS] [--wait]``: enqueue a task by name from the shell (Celery's ``call``).

The CLI has no handler code, so arguments are positional only and are not checked against
a signature here; the worker that runs the task validates them and fails the task (with a
clear error) when they do not fit.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from ebind.cli.output import echo_json, is_json, json_option, run_async

if TYPE_CHECKING:
    from ebind.app import App

__all__ = ["parse_args", "send"]


def parse_args(text: str | None) -> list[Any]:
    """``ARGS`` as positional arguments: a JSON array is the argument list, any other value one.

    Raises:
        click.BadParameter: not JSON (the message quotes where parsing stopped).
    """
    if text is None:
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"{text!r} is not JSON ({exc.msg} at character {exc.pos}); pass a JSON array of "
            "positional arguments, e.g. '[1, 2]', or one JSON value such as '\"hello\"'",
            param_hint="ARGS",
        ) from None
    except RecursionError:
        raise click.BadParameter(
            "the JSON nests too deeply to read; a worker takes at most 100 levels",
            param_hint="ARGS",
        ) from None
    return value if isinstance(value, list) else [value]


async def _send(
    app: App, task: str, args: list[Any], wait: bool, wait_for: float, route: dict[str, Any]
) -> tuple[str, Any, bool]:
    future = await app.apply_async(task, args, ignore_result=not wait, **route)
    if not wait:
        return future.id, None, False
    return future.id, await future.result(timeout=wait_for), True


@click.command("send")
@click.argument("task")
@click.argument("args", required=False, metavar="[ARGS]")
@click.option("--wait", is_flag=True, help="Wait for the task and print its result (as JSON).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Seconds --wait waits for the result before giving up (the task may still run).",
)
@click.option("--target", default=None, help="Send to workers that claim this target only.")
@click.option("-Q", "--queue", default=None, help="The queue to send it to [default: default].")
@click.option(
    "--priority",
    type=click.Choice(["high", "normal", "low"]),
    default=None,
    help="Its priority band [default: normal].",
)
@json_option
@click.pass_context
def send(
    ctx: click.Context,
    task: str,
    args: str | None,
    wait: bool,
    timeout: float,
    target: str | None,
    queue: str | None,
    priority: str | None,
) -> None:
    """Enqueue TASK with ARGS (a JSON array of positional arguments) and print its task id.

    With --wait, print the task's result instead once a worker has run it; a failed task
    prints its error and exits with status 1.
    """
    values = parse_args(args)
    route = {"target": target, "queue": queue, "priority": priority}
    sent = run_async(ctx, lambda app: _send(app, task, values, wait, timeout, route))
    if sent is None:
        return
    task_id, result, waited = sent
    if is_json(ctx):
        echo_json({"task_id": task_id, "result": result} if waited else {"task_id": task_id})
    elif waited:
        echo_json(result)
    else:
        click.echo(task_id)
