"""docs/celery.md keeps its promise: every Python sample runs, every `ebind` command exists.

The Python samples run in page order in one namespace against a real NATS node, with an
in-process worker serving the `app` the first sample defines (what `ebind worker -A
tasks:app` would do). Samples with a top-level `await` run on the test's event loop; the
others run in a thread, as sync code (a view, a script) would, so the blocking API works.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from ebind.cli import main as cli_main

DOC = Path(__file__).parent.parent / "docs" / "celery.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _blocks(language: str) -> list[tuple[int, str]]:
    """(line number, code) of every fenced block of ``language`` in the page."""
    text = DOC.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, m.start()) + 1, m.group(2))
        for m in _FENCE.finditer(text)
        if m.group(1) == language
    ]


def test_the_page_has_samples_of_each_kind() -> None:
    assert len(_blocks("python")) >= 10
    assert len(_blocks("console")) >= 3


@pytest.mark.timeout(120)
async def test_python_samples_run_in_order(nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EBIND_NATS_URL", nats_url)  # the first sample's App("proj") reads it
    blocks = _blocks("python")
    ns: dict[str, Any] = {"__name__": "tasks"}
    worker: Any = None
    running: asyncio.Task[None] | None = None
    try:
        for index, (line, code) in enumerate(blocks):
            await _run_block(code, f"{DOC.name}:{line}", ns)
            if index == 0:
                app = ns["app"]
                await app.connect()
                worker = app.worker(concurrency=8, ack_wait=5, shutdown_grace=5)
                running = asyncio.create_task(worker.run())
    finally:
        if worker is not None and running is not None:
            await worker.stop()
            await running
        if "app" in ns:
            await ns["app"].close()


async def _run_block(code: str, where: str, ns: dict[str, Any]) -> None:
    compiled = compile(code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if compiled.co_flags & inspect.CO_COROUTINE:
        await eval(compiled, ns)
    else:
        await asyncio.to_thread(exec, compiled, ns)


def _console_lines() -> Iterator[tuple[str, list[str]]]:
    for line, code in _blocks("console"):
        for offset, text in enumerate(code.splitlines()):
            if text.strip():
                yield f"{DOC.name}:{line + 1 + offset}", shlex.split(text)


def _resolve(argv: list[str]) -> tuple[click.Command, list[str]]:
    """The command argv names (walking the groups) and the arguments left for it."""
    assert argv[0] == "ebind", f"console samples show ebind commands, got {argv[0]!r}"
    command: click.Command = cli_main
    rest = argv[1:]
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(click.Context(command), rest[0])
        assert sub is not None, f"{command.name} has no command {rest[0]!r}"
        command, rest = sub, rest[1:]
    return command, rest


@pytest.mark.parametrize(("where", "argv"), list(_console_lines()), ids=lambda v: str(v))
def test_console_commands_exist_with_their_options(where: str, argv: list[str]) -> None:
    command, rest = _resolve(argv)
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    for token in rest:
        if token.startswith("-"):
            assert token.split("=")[0] in known, f"{where}: {command.name} has no option {token}"
    runs_alone = not isinstance(command, click.Group) or command.invoke_without_command
    assert runs_alone, f"{where}: {argv} names a group, not a command"


def test_command_check_catches_a_wrong_option() -> None:
    command, _ = _resolve(["ebind", "worker", "-A", "x:app", "--autoscale", "4"])
    known = {opt for p in command.params for opt in p.opts}
    assert command.name == "worker"
    assert "--autoscale" not in known and "--claim" in known
    with pytest.raises(AssertionError, match="has no command 'flower'"):
        _resolve(["ebind", "flower"])
