"""``ebind dag get`` / ``dag step get`` show strings others chose with control characters as ``?``.

Labels, breakpoint labels and signal names are free-form strings any submitter or signal
sender picks (and records any ``dags=True`` writer can forge): printed as they are, an
OSC/CSI sequence would retitle the terminal, clear the screen or rewrite what the
operator sees.
"""

from __future__ import annotations

import uuid

import pytest
from cli_helpers import Background, invoke

from ebind.workflow.dag import DAG

pytestmark = pytest.mark.timeout(60)

HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x1b[1;1Hall clear\r"


def test_dag_get_and_step_get_do_not_pass_escape_sequences(bg: Background) -> None:
    d = DAG(f"hostile-{uuid.uuid4().hex[:8]}", labels=[HOSTILE])
    d.step("a", "add", 1, 2, break_before=[HOSTILE], wait_for_signals=[HOSTILE + "?"])
    bg.submit(d)
    bg.run(bg.app.workflow.signal(d.id, HOSTILE, None))  # any string is a signal name
    leaks = []
    for args in (("dag", "get", d.id), ("dag", "step", "get", d.id, "a")):
        result = invoke(bg.url, *args)
        assert result.exit_code == 0, (args, result.output, result.exception)
        if "\x1b]" in result.output or "\r" in result.output:
            leaks.append((" ".join(args[:-1] if args[1] == "get" else args[:3]), result.output))
    assert not leaks, leaks
