"""Every code sample of the guide pages and the README runs or is type-checked."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from doc_blocks import (
    DOCS,
    GUIDE_PAGES,
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


def _command_lines() -> list[tuple[str, str]]:
    """Every `ebind ...` line of a shell block on the guide pages: (page, line)."""
    found: list[tuple[str, str]] = []
    for page in GUIDE_PAGES:
        for block in blocks(DOCS / page):
            if block.lang not in ("bash", "console"):
                continue
            for raw in block.text.splitlines():
                line = raw.removeprefix("$ ").split("  #", 1)[0].strip()
                if line.startswith("ebind "):
                    found.append((page, line))
    return found


@pytest.mark.parametrize(("page", "line"), _command_lines())
def test_command_lines_parse(page: str, line: str) -> None:
    """Each documented command line names real commands and options (checked, not run)."""
    try:
        parse_command(shlex.split(line))
    except click.UsageError as exc:
        pytest.fail(f"{page}: `{line}` is not accepted: {exc.format_message()}")
