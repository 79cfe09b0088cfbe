"""Connection failures and the real ``python -m ebind`` entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from cli_helpers import Background, assert_clean_error, invoke
from refused_port import RefusedPort


def test_unreachable_server_fails_fast_with_one_line(refused_port: RefusedPort) -> None:
    url = f"nats://127.0.0.1:{refused_port.port}"
    for args in (("dag", "ls"), ("dlq", "ls"), ("stream", "ls")):
        started = time.monotonic()
        r = invoke(url, *args)
        assert time.monotonic() - started < 3.0
        assert_clean_error(r, "cannot reach NATS at", url, "ebind server")


def test_python_m_ebind_dag_ls_json_in_a_subprocess(bg: Background) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ebind", "dag", "ls", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "EBIND_NATS_URL": bg.url},
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)  # stdout is pure JSON: logs never reach it
    assert isinstance(rows, list)
    assert all({"id", "status", "steps", "labels"} <= set(r) for r in rows)
