"""Every code sample of the guide pages and the README runs or is type-checked."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from doc_blocks import (
    DOCS,
    GUIDE_PAGES,
    PAGES,
    PYTHON_LANGS,
    ROOT,
    SNIPPETS,
    blocks,
    expectations,
    include_target,
    parse_command,
)

from ebind.embed import Node, start_node

GUIDES = sorted(SNIPPETS.glob("*_guide.py"))
QUICKSTART = SNIPPETS / "quickstart"


def _quickstart_output() -> list[str]:
    """What quickstart.md shows `python send.py` printing."""
    for block in blocks(DOCS / "quickstart.md"):
        lines = block.text.splitlines()
        if block.lang == "console" and lines[:1] == ["$ python send.py"]:
            return lines[1:]
    raise AssertionError("quickstart.md no longer shows the output of send.py")


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
    if "EBIND_NATS_URL" not in extra:
        env.pop("EBIND_NATS_URL", None)
    return env


def test_guide_samples_exist() -> None:
    assert len(GUIDES) >= 3, "docs/snippets lost its runnable guide samples"


@pytest.mark.parametrize("page", GUIDE_PAGES)
def test_python_blocks_are_included_files(page: str) -> None:
    """A Python sample on a guide page is a snippet file, so the suite runs what readers see."""
    for block in blocks(DOCS / page):
        if block.lang != "python":
            continue
        target = include_target(block)
        assert target is not None, (
            f"{page}: a python block is written inline; put it in docs/snippets/ and include "
            f'it with --8<-- "docs/snippets/<file>.py"\n{block.text}'
        )
        path = ROOT / target.split(":", 1)[0]
        assert path.is_file(), f"{page} includes {target}, which does not exist"
        assert path.is_relative_to(SNIPPETS), f"{page} includes {target} from outside docs/snippets"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", GUIDES, ids=[p.stem for p in GUIDES])
def test_guide_sample_runs(path: Path) -> None:
    expected = expectations(path)
    assert expected, f"{path.name} has no '# expect: ...' line saying what it prints"
    proc = subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=100,
        env=_env(),
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
    )
    assert proc.returncode == 0, (
        f"{path.name} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
    for line in expected:
        assert line in proc.stdout, f"{path.name} did not print {line!r}\n{proc.stdout}"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    started = start_node(store_dir=tmp_path / "store")
    try:
        yield started
    finally:
        started.shutdown()


def _wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    """Read the worker's stderr until ``needle`` shows (the worker is consuming)."""
    assert proc.stderr is not None
    seen: list[str] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"worker never logged {needle!r}:\n{''.join(seen)}")


@pytest.mark.timeout(120)
def test_quickstart_worker_and_producer(node: Node) -> None:
    """The quickstart as a reader follows it: `ebind worker -A tasks:app`, then send.py."""
    env = _env(EBIND_NATS_URL=node.client_url)
    worker = subprocess.Popen(
        [sys.executable, "-m", "ebind", "--log-level", "info", "worker", "-A", "tasks:app"],
        cwd=QUICKSTART,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_line(worker, "worker.ready", timeout=30)
        proc = subprocess.run(
            [sys.executable, "send.py"],
            cwd=QUICKSTART,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert proc.returncode == 0, f"send.py exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    # Library log lines may share stdout until logging defaults to stdlib `logging`; the
    # sample's own lines must all be there, in order.
    shown = _quickstart_output()
    assert shown, "quickstart.md shows no output for send.py"
    printed = [ln for ln in proc.stdout.splitlines() if ln in shown]
    assert printed == shown, proc.stdout
    assert worker.returncode == 0, f"the worker exited {worker.returncode} on SIGTERM"


_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SHELL_OPERATORS = frozenset({"|", "||", "&&", ";", "&", ">", ">>", "<"})


def _command_lines() -> list[tuple[str, str]]:
    """Every `ebind ...` line of a shell block on any docs page: (page, line)."""
    found: list[tuple[str, str]] = []
    for page in PAGES:
        for block in blocks(DOCS / page):
            if block.lang not in ("bash", "console", "sh", "shell"):
                continue
            # a trailing backslash continues the command on the next line
            for raw in block.text.replace("\\\n", " ").splitlines():
                line = raw.removeprefix("$ ").split("  #", 1)[0].strip()
                words = shlex.split(line, comments=True) if line else []
                cut = [i for i, w in enumerate(words) if w in _SHELL_OPERATORS]
                words = words[: cut[0]] if cut else words  # the first command of a pipeline
                while words and _ENV_ASSIGNMENT.match(words[0]):
                    words.pop(0)  # `EBIND_NATS_USER=alice ebind ...` sets the environment
                if words[:1] == ["ebind"] and len(words) > 1:
                    found.append((page, shlex.join(words)))
    return found


@pytest.mark.parametrize(("page", "line"), _command_lines())
def test_command_lines_parse(page: str, line: str) -> None:
    """Each documented command line names real commands and options (checked, not run)."""
    try:
        parse_command(shlex.split(line))
    except click.UsageError as exc:
        pytest.fail(f"{page}: `{line}` is not accepted: {exc.format_message()}")


@pytest.mark.timeout(60)
async def test_sync_page_sample_runs(nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """sync.md's view gets the sum through the blocking API while a worker serves the task."""
    monkeypatch.setenv("EBIND_NATS_URL", nats_url)  # the sample's App("myproject") reads it
    code = "\n\n".join(b.text for b in blocks(DOCS / "sync.md") if b.lang in PYTHON_LANGS)
    ns: dict[str, Any] = {"__name__": "sync_page"}
    exec(compile(code, "sync.md", "exec"), ns)
    app = ns["app"]
    await app.connect()
    worker = app.worker(concurrency=2, ack_wait=5, shutdown_grace=5)
    running = asyncio.create_task(worker.run())
    try:
        # a view is plain sync code: it runs off the event loop, as a web server's thread would
        assert await asyncio.to_thread(ns["view"], None) == "3"
    finally:
        await worker.stop()
        await running
        await app.close()
