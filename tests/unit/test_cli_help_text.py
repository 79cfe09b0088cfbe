"""Every command and every option of the ``ebind`` CLI explains itself in --help."""

from __future__ import annotations

from collections.abc import Iterator

import click
from click.testing import CliRunner

from ebind.cli import main


def _walk(
    cmd: click.Command, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, cmd
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd)
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            assert sub is not None, f"{' '.join((*path, name))} is listed but cannot be loaded"
            yield from _walk(sub, (*path, name))


def test_every_command_and_option_has_help_text() -> None:
    missing: list[str] = []
    seen = 0
    for path, cmd in _walk(main, ("ebind",)):
        seen += 1
        if not (cmd.help or cmd.short_help):
            missing.append(f"{' '.join(path)} (command)")
        for param in cmd.params:
            if isinstance(param, click.Option) and not param.hidden and not param.help:
                missing.append(f"{' '.join(path)} {param.opts[0]}")
    assert seen > 20
    assert missing == []


def test_every_command_renders_its_help() -> None:
    runner = CliRunner()
    for path, _ in _walk(main, ("ebind",)):
        out = runner.invoke(main, [*path[1:], "--help"])
        assert out.exit_code == 0, (path, out.output)
        assert "Usage:" in out.output


def test_shell_completion_script_is_generated() -> None:
    import os
    import subprocess
    import sys

    for shell in ("bash", "zsh", "fish"):
        done = subprocess.run(
            [sys.executable, "-c", "from ebind.cli import main; main(prog_name='ebind')"],
            env={**os.environ, "_EBIND_COMPLETE": f"{shell}_source"},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        assert "_EBIND_COMPLETE" in done.stdout, shell


def test_completion_offers_subcommands() -> None:
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", "from ebind.cli import main; main(prog_name='ebind')"],
        env={
            **os.environ,
            "_EBIND_COMPLETE": "bash_complete",
            "COMP_WORDS": "ebind se",
            "COMP_CWORD": "1",
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    offered = {line.split(",", 1)[1] for line in done.stdout.splitlines() if "," in line}
    assert {"send", "server"} <= offered
