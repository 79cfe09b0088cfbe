"""The connection flags every client command shares: credentials and TLS for a secured cluster.

``--creds``, ``--nkey``, ``--token``, ``--user``/``--password``, ``--tls-ca``, ``--tls-cert``,
``--tls-key`` and ``--tls-hostname`` are accepted by the root group (``ebind --creds f dag
ls``) and by every client command (``ebind dag ls --creds f``); the command's own flag wins,
then the root's, then ``$EBIND_NATS_*``. Flags are stored in ``ctx.meta`` rather than passed
as parameters, so no command signature changes when the group grows.
"""

from __future__ import annotations

from collections.abc import Iterable

import click

from ebind.connection import ENV, FLAGS, ConnectionSettings

__all__ = [
    "NO_CONNECTION_FLAGS",
    "add_connection_flags",
    "cli_settings",
    "flag_settings",
]

_META_KEY = "ebind.connection"
_PARAM_PREFIX = "ebind_conn_"
NO_CONNECTION_FLAGS = frozenset({"server", "demo", "permissions"})
"""Commands that start their own server or print configuration, instead of connecting."""

_FILE = "The secret stays in the file, out of argv and shell history."
_HELP: dict[str, str] = {
    "creds": "NATS creds file (user JWT and nkey seed) for decentralised auth.",
    "nkey": "File holding the user's nkey seed (SU...).",
    "token": "Auth token. Prefer $EBIND_NATS_TOKEN: a flag lands in shell history and ps.",
    "user": "User name (with --password or $EBIND_NATS_PASSWORD).",
    "password": "Password. Prefer $EBIND_NATS_PASSWORD: a flag lands in shell history and ps.",
    "tls_ca": "CA certificate (PEM) that the server certificate must chain to.",
    "tls_cert": "Client certificate (PEM) for mutual TLS, with --tls-key.",
    "tls_key": "Private key (PEM, unencrypted) of --tls-cert.",
    "tls_hostname": "Name to verify in the server certificate (default: the URL's host).",
}
_FILES = frozenset({"creds", "nkey", "tls_ca", "tls_cert", "tls_key"})
_SECRET_FILES = frozenset({"creds", "nkey", "tls_key"})


def _store(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is None or param.name is None:
        return
    ctx.meta.setdefault(_META_KEY, {})[param.name.removeprefix(_PARAM_PREFIX)] = value


def _options() -> list[click.Option]:
    made = []
    for name in ENV:
        help_text = f"{_HELP[name]} {_FILE if name in _SECRET_FILES else ''}".strip()
        made.append(
            click.Option(
                [FLAGS[name], _PARAM_PREFIX + name],
                default=None,
                expose_value=False,
                callback=_store,
                metavar="FILE" if name in _FILES else "TEXT",
                help=f"{help_text} [env: {ENV[name]}]",
            )
        )
    return made


def _has_flags(command: click.Command) -> bool:
    return any((p.name or "").startswith(_PARAM_PREFIX) for p in command.params)


def add_connection_flags(command: click.Command) -> click.Command:
    """Give ``command`` and, for a group, every command below it the connection flags."""
    stack: list[click.Command] = [command]
    while stack:
        cmd = stack.pop()
        if not _has_flags(cmd):
            cmd.params.extend(_options())
        if isinstance(cmd, click.Group):
            stack.extend(_subcommands(cmd))
    return command


def _subcommands(group: click.Group) -> Iterable[click.Command]:
    return list(group.commands.values())


def flag_settings(ctx: click.Context) -> ConnectionSettings:
    """The connection settings given as flags (anywhere on the command line)."""
    given: dict[str, str] = dict(ctx.meta.get(_META_KEY, {}))
    return ConnectionSettings(**given)


def cli_settings(ctx: click.Context) -> ConnectionSettings:
    """Flags over ``$EBIND_NATS_*``: what a CLI command connects with."""
    return flag_settings(ctx).over(ConnectionSettings.from_env())
