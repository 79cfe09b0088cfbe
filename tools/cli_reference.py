"""Render the ``ebind`` command tree as Markdown, straight from click, for docs/cli.md.

The docs build calls :func:`render` through a mkdocs hook, so the option lists on the
site are always the ones the installed command accepts.
"""

from __future__ import annotations

import click

MARKER = "<!-- cli-reference -->"


def _escape(text: str) -> str:
    """Make click's plain help text safe inside a Markdown table cell or paragraph."""
    text = text.replace("\b\n", "").replace("\b", "")
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _option_row(param: click.Parameter, ctx: click.Context) -> str | None:
    """One table row for an option; None for arguments and hidden options."""
    if not isinstance(param, click.Option) or param.hidden:
        return None
    record = param.get_help_record(ctx)
    if record is None:
        return None
    names, help_text = record
    cell = " ".join(_escape(help_text).split())
    return f"| `{names}` | {cell} |"


def _command_section(cmd: click.Command, path: list[str], parent: click.Context) -> list[str]:
    """Markdown for one command and, recursively, its subcommands."""
    ctx = click.Context(cmd, info_name=path[-1], parent=parent)
    full = " ".join(path)
    level = "#" * min(len(path) + 1, 6)
    usage = " ".join(cmd.collect_usage_pieces(ctx))
    lines = [f"{level} `{full}`", "", "```text", f"{full} {usage}".rstrip(), "```", ""]
    if cmd.help:
        lines += [_escape(cmd.help).strip(), ""]
    rows = [r for r in (_option_row(p, ctx) for p in cmd.get_params(ctx)) if r]
    if rows:
        lines += ["| option | what it does |", "|---|---|", *rows, ""]
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                lines += _command_section(sub, [*path, name], ctx)
    return lines


def command_names(group: click.Command, prefix: str = "ebind") -> list[str]:
    """Every visible command path under ``group`` ("ebind dag ls", ...), depth first."""
    ctx = click.Context(group, info_name=prefix)
    names = [prefix]
    if isinstance(group, click.Group):
        for name in group.list_commands(ctx):
            sub = group.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                names += command_names(sub, f"{prefix} {name}")
    return names


def render() -> str:
    """The whole ``ebind`` command reference as Markdown."""
    from ebind.cli import main

    return "\n".join(_command_section(main, ["ebind"], click.Context(main, info_name="ebind")))
