"""The shared connection flags: on every client command, leaf over root over environment."""

from __future__ import annotations

import click
from click.testing import CliRunner

from ebind.cli import main
from ebind.cli.conn_flags import NO_CONNECTION_FLAGS, add_connection_flags, cli_settings
from ebind.connection import FLAGS


def _leaves(
    group: click.Group, ctx: click.Context, path: str = ""
) -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, name
        if isinstance(cmd, click.Group):
            out += _leaves(cmd, ctx, f"{path}{name} ")
        else:
            out.append((f"{path}{name}", cmd))
    return out


def test_every_client_command_and_the_root_accept_every_flag() -> None:
    ctx = click.Context(main)
    leaves = _leaves(main, ctx)
    assert len(leaves) > 20  # dag, dlq, stream, schedule, worker ...
    for name, cmd in [("ebind", main), *leaves]:
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        if name.split()[0] in NO_CONNECTION_FLAGS:
            assert "--creds" not in opts, name
            continue
        missing = set(FLAGS.values()) - opts
        assert not missing, f"{name} lacks {sorted(missing)}"


def test_server_keeps_its_own_token_meaning() -> None:
    server = main.get_command(click.Context(main), "server")
    assert server is not None
    token = [p for p in server.params if "--token" in getattr(p, "opts", [])]
    assert len(token) == 1 and token[0].name == "token"


def test_help_recommends_variables_for_secrets() -> None:
    out = CliRunner().invoke(main, ["stream", "ls", "--help"]).output
    assert "EBIND_NATS_PASSWORD" in out and "shell history" in out
    assert "EBIND_NATS_CREDS" in out


@click.group()
def _root() -> None:
    """A stand-in root."""


@_root.command()
@click.pass_context
def show(ctx: click.Context) -> None:
    """Print what the command would connect with."""
    s = cli_settings(ctx)
    click.echo(f"{s.token}|{s.user}|{s.password}|{s.tls_ca}")


add_connection_flags(_root)


def test_leaf_flag_beats_root_flag_beats_environment() -> None:
    env = {"EBIND_NATS_TOKEN": "env-token", "EBIND_NATS_TLS_CA": "/env-ca"}
    r = CliRunner().invoke(_root, ["--token", "root", "show", "--token", "leaf"], env=env)
    assert r.output.strip() == "leaf|None|None|/env-ca"
    r = CliRunner().invoke(_root, ["--token", "root", "show"], env=env)
    assert r.output.strip() == "root|None|None|/env-ca"
    r = CliRunner().invoke(_root, ["show"], env=env)
    assert r.output.strip() == "env-token|None|None|/env-ca"


def test_flag_method_replaces_environment_method_but_fills_its_own_gaps() -> None:
    env = {"EBIND_NATS_TOKEN": "env-token", "EBIND_NATS_PASSWORD": "env-pass"}
    r = CliRunner().invoke(_root, ["show", "--user", "alice"], env=env)
    assert r.output.strip() == "None|alice|env-pass|None"
