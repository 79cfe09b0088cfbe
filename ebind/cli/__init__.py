"""The ``ebind`` command line: a click group whose subcommands load on first use.

Subcommands are imported lazily so ``ebind --help`` and ``ebind worker`` stay fast and a
command's dependencies are only imported when it runs.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from ebind.cli.conn_flags import NO_CONNECTION_FLAGS, add_connection_flags
from ebind.cli.retention import retention_options, retention_values

__all__ = ["main"]

# name -> "module:attribute". Later commands register here.
_COMMANDS: dict[str, str] = {
    "worker": "ebind.cli.worker:worker",
    "server": "ebind.cli.server:server",
    # --- spots for the commands other engineers add (uncomment when the module lands) ---
    "dag": "ebind.cli.dag:dag",  # ebind dag ls|get|tree|watch|step|cancel|...
    "dlq": "ebind.cli.dlq:dlq",  # ebind dlq ls|show|requeue|purge
    "stream": "ebind.cli.stream:stream",  # ebind stream ls|info|peek|purge|provision
    "permissions": "ebind.cli.permissions:permissions",
    "schedule": "ebind.cli.schedule:schedule",
    "demo": "ebind.cli.demo:demo",
    "send": "ebind.cli.send:send",  # ebind send TASK [ARGS] [--wait]
    "task": "ebind.cli.task:task",  # ebind task get|revoke ID
    "ratelimit": "ebind.cli.ratelimit:ratelimit",  # ebind ratelimit ls
    "concurrency": "ebind.cli.concurrency:concurrency",  # ebind concurrency ls
}


class LazyGroup(click.Group):
    """A group that imports each subcommand's module only when that command is used."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Eagerly added commands plus the lazy ones."""
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Import ``cmd_name``'s module on demand."""
        if cmd_name in self._lazy:
            module_name, _, attr = self._lazy[cmd_name].partition(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name != module_name:
                    raise
                return None  # registered spot whose module is not written yet
            command = getattr(module, attr)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self._lazy[cmd_name]} is not a click command")
            if cmd_name not in NO_CONNECTION_FLAGS:
                add_connection_flags(command)  # --creds, --tls-ca, ... on every client command
            return command
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=LazyGroup, lazy=_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.option(
    "--nats",
    "nats_url",
    envvar="EBIND_NATS_URL",
    default=None,
    help="NATS server URL (default $EBIND_NATS_URL, then nats://127.0.0.1:4222). Put "
    "credentials in the flags or variables below, not in the URL.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    default=None,
    help="Log rendering (default: console on a terminal, json otherwise).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Lowest log level written.",
)
@retention_options
@click.version_option(package_name="ebind-nats", prog_name="ebind", message="%(prog)s %(version)s")
@click.pass_context
def main(
    ctx: click.Context,
    /,
    nats_url: str | None,
    as_json: bool,
    log_format: str | None,
    log_level: str,
    **retention: float | None,
) -> None:
    """Ebind: Celery-style tasks and durable DAG workflows on NATS JetStream."""
    ctx.ensure_object(dict)
    ctx.obj.update(nats_url=nats_url, json=as_json, log_format=log_format, log_level=log_level)
    # --- --retention-* (ebind/cli/retention.py): applied by every command that connects ---
    ctx.obj.update(retention=retention_values(retention))
    from ebind.cli.output import configure_logging

    # Every command, `ebind server` included, logs to stderr at --log-level.
    configure_logging(ctx)


add_connection_flags(main)  # ebind --creds FILE <command> works as well as <command> --creds FILE
