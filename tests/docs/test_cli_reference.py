"""The CLI reference rendered from click: every command, every visible option, safe Markdown."""

from __future__ import annotations

from pathlib import Path

import click

from ebind.cli import main
from tools.cli_reference import _command_section, command_names, render
from tools.docs_hooks import _prune


def test_every_command_has_a_heading() -> None:
    text = render()
    for name in command_names(main):
        assert f"`{name}`\n" in text, f"no section for {name}"
    assert {"ebind worker", "ebind dag ls", "ebind dlq requeue"} <= set(command_names(main))


def test_every_visible_option_is_listed() -> None:
    text = render()
    ctx = click.Context(main, info_name="ebind")
    worker = main.get_command(ctx, "worker")
    assert worker is not None
    for param in worker.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert f"`{', '.join(param.opts)}" in text, f"worker option {param.opts} missing"


def test_help_text_cannot_break_the_markdown() -> None:
    @click.command(help="Use <dag> | or & here.")
    @click.option("--x", help="a <b> | c")
    @click.option("--secret", hidden=True)
    def cmd(x: str, secret: str) -> None:
        """Unused."""

    @click.group()
    def root() -> None:
        """Root."""

    root.add_command(cmd, "cmd")
    lines = _command_section(root, ["root"], click.Context(root, info_name="root"))
    text = "\n".join(lines)
    assert "Use &lt;dag&gt; \\| or &amp; here." in text
    assert "| `--x TEXT` | a &lt;b&gt; \\| c |" in text
    assert "--secret" not in text


def test_pending_pages_leave_the_nav_only_while_missing(tmp_path: Path) -> None:
    docs = tmp_path
    nav = [{"Home": "index.md"}, {"Start": [{"Celery": "celery.md"}, {"Q": "quickstart.md"}]}]
    assert _prune(nav, docs) == [{"Home": "index.md"}, {"Start": [{"Q": "quickstart.md"}]}]
    (docs / "celery.md").write_text("# Celery\n")
    assert _prune(nav, docs) == nav
    # a page that is not pending stays listed, so the strict build reports it as missing
    assert _prune([{"Gone": "gone.md"}], docs) == [{"Gone": "gone.md"}]
