"""Reading fenced code blocks out of the Markdown pages, for the documentation tests."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SNIPPETS = DOCS / "snippets"

# The guide pages this site added: every sample on them must be a file the suite runs.
GUIDE_PAGES = (
    "index.md",
    "install.md",
    "quickstart.md",
    "tasks.md",
    "workflows.md",
    "periodic.md",
    "cli.md",
    "deployment.md",
    "api.md",
)

# A fence may be indented (a block inside a list item); its lines carry the same indent.
_FENCE = re.compile(r"^( *)```([^\n]*)\n(.*?)^\1```\s*$", re.MULTILINE | re.DOTALL)
# Every page of the site; the older pages keep their samples inline, type-checked per page.
PAGES = tuple(sorted(p.name for p in DOCS.glob("*.md")))

# Pages whose inline python blocks, joined in order, form one module checked by mypy --strict.
TYPECHECKED_PAGES = ("sync.md", "security.md", "reliability.md", "front-door.md", "queues.md")

# Pages whose python blocks a dedicated test runs against a server.
RUN_PAGES = ("celery.md",)

PYTHON_LANGS = ("python", "py", "python3")

_INCLUDE = re.compile(r'^--8<-- "([^"]+)"$')


@dataclass(frozen=True)
class Block:
    """One fenced block: its info string (language and attributes) and its text."""

    info: str
    text: str

    @property
    def lang(self) -> str:
        """The language word of the info string ("" for a bare fence)."""
        return self.info.split(" ", 1)[0].strip()


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, in order."""
    text = path.read_text(encoding="utf-8")
    found: list[Block] = []
    for m in _FENCE.finditer(text):
        indent = m.group(1)
        body = "".join(ln.removeprefix(indent) for ln in m.group(3).splitlines(keepends=True))
        found.append(Block(m.group(2).strip(), body))
    return found


def include_target(block: Block) -> str | None:
    """The snippet path of a block that only includes a file, else None."""
    lines = [ln for ln in block.text.splitlines() if ln.strip()]
    if len(lines) != 1:
        return None
    m = _INCLUDE.match(lines[0].strip())
    return m.group(1) if m else None


def expectations(path: Path) -> list[str]:
    """The ``# expect: ...`` lines of a runnable sample: what it must print."""
    return [m.strip() for m in re.findall(r"^# expect: (.+)$", path.read_text(), re.MULTILINE)]


def parse_command(argv: list[str]) -> None:
    """Parse an ``ebind ...`` command line as the CLI would, without running it.

    Names, option values and required options are all checked; a problem raises
    ``click.UsageError``.
    """
    import click

    from ebind.cli import main

    assert argv[:1] == ["ebind"], f"not an ebind command line: {argv}"
    cmd: click.Command = main
    name, args, parent = "ebind", argv[1:], None
    while True:
        ctx = cmd.make_context(name, args, parent=parent)
        if not isinstance(cmd, click.Group):
            return
        # click keeps the subcommand and its arguments apart from the group's own
        rest = [*getattr(ctx, "_protected_args", ()), *ctx.args]
        if not rest:
            return
        sub_name, sub, args = cmd.resolve_command(ctx, rest)
        assert sub is not None and sub_name is not None, f"no command in {argv}"
        cmd, name, parent = sub, sub_name, ctx
