"""Every examples/*.py runs as a program and prints what its `# expect:` lines promise.

The examples spend most of their time waiting on their own servers and timers, so a few
run at once: each starts before its test and each test waits for its own program.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("[0-9]*.py"))
_EXPECT = re.compile(r"^# expect: (.+)$", re.MULTILINE)
_AT_ONCE = 3
_TIMEOUT = 150


def _expectations(path: Path) -> list[str]:
    return [m.strip() for m in _EXPECT.findall(path.read_text(encoding="utf-8"))]


class _Runs:
    """The selected examples, started ``_AT_ONCE`` at a time in test order."""

    def __init__(self, paths: list[Path]) -> None:
        self._procs: list[subprocess.Popen[str]] = []
        self._pool = ThreadPoolExecutor(max_workers=_AT_ONCE, thread_name_prefix="example")
        self._runs: dict[Path, Future[subprocess.CompletedProcess[str]]] = {
            p: self._pool.submit(self._run, p) for p in paths
        }

    def _run(self, path: Path) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("EBIND_NATS_URL", None)
        proc = subprocess.Popen(
            [sys.executable, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
            cwd=path.parent.parent,
        )
        self._procs.append(proc)
        try:
            out, err = proc.communicate(timeout=_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(
                f"{path.name} did not finish within {_TIMEOUT}s\n{out}\n{err}"
            ) from None
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def result(self, path: Path) -> subprocess.CompletedProcess[str]:
        """Wait for ``path``'s run (started now if it was not selected up front)."""
        if path not in self._runs:
            self._runs[path] = self._pool.submit(self._run, path)
        return self._runs[path].result()

    def close(self) -> None:
        """Drop runs no test waits for and kill any program still running."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
        self._pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest) -> Iterator[_Runs]:
    """Start every example this session selected from this module, a few at a time."""
    selected = [
        item.callspec.params["path"]
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.module is request.module
        and hasattr(item, "callspec")
    ]
    started = _Runs(selected)
    try:
        yield started
    finally:
        started.close()


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 5, "examples/ lost its programs"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path: Path, runs: _Runs) -> None:
    expected = _expectations(path)
    assert expected, f"{path.name} has no '# expect: ...' line saying what it prints"
    proc = runs.result(path)
    assert proc.returncode == 0, (
        f"{path.name} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
    for line in expected:
        assert line in proc.stdout, (
            f"{path.name} did not print {line!r}\n--- stdout:\n{proc.stdout}"
        )
