"""Every examples/*.py runs as a program and prints what its `# expect:` lines promise."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("[0-9]*.py"))
_EXPECT = re.compile(r"^# expect: (.+)$", re.MULTILINE)


def _expectations(path: Path) -> list[str]:
    return [m.strip() for m in _EXPECT.findall(path.read_text(encoding="utf-8"))]


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 5, "examples/ lost its programs"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path: Path) -> None:
    expected = _expectations(path)
    assert expected, f"{path.name} has no '# expect: ...' line saying what it prints"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("EBIND_NATS_URL", None)
    proc = subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=150,
        env=env,
        stdin=subprocess.DEVNULL,
        cwd=path.parent.parent,
    )
    assert proc.returncode == 0, (
        f"{path.name} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
    for line in expected:
        assert line in proc.stdout, (
            f"{path.name} did not print {line!r}\n--- stdout:\n{proc.stdout}"
        )
