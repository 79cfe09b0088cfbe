"""`python -m ebind demo` (what `make demo` runs) works end to end on its own embedded server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.timeout(120)
def test_demo_runs_tasks_dlq_and_a_dag_then_stops() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("EBIND_NATS_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "ebind", "demo"],
        capture_output=True,
        text=True,
        timeout=100,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for expected in (
        "add(2, 3)            -> 5",
        "flaky('k')           -> k ok on attempt 2",
        "charge(-5.0)         -> TaskFailed validation: cannot charge -5.0",
        "dead letters         -> 1",
        "total = 23.5",
        "DAG status: done",
        "all stopped in",
    ):
        assert expected in out, f"demo did not print {expected!r}\n{out}\n{proc.stderr}"
