"""`--log-level` / `--log-format` reach every command, `ebind server` included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest


def _server(*flags: str) -> tuple[str, str]:
    """Run `ebind [flags] server --port 0` until it is ready, stop it, return its output."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ebind", *flags, "server", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        lines = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "press Ctrl-C to stop" in line or not line:
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return "".join(lines) + out, err


@pytest.mark.parametrize("level", ["warning", "info"])
def test_server_below_debug_prints_no_debug_lines(level: str) -> None:
    out, err = _server("--log-level", level)
    assert "nats-server ready" in out
    assert "nats.started" not in out + err and "nats.shut_down" not in out + err
    assert "debug" not in (out + err).lower()


def test_server_debug_logs_go_to_stderr_as_json() -> None:
    out, err = _server("--log-level", "debug", "--log-format", "json")
    assert "nats.started" not in out  # stdout carries only the operator's lines
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    started = [e for e in events if e["event"] == "nats.started"]
    assert started and started[0]["level"] == "debug" and started[0]["logger"] == "ebind.embed"


def test_server_console_format_is_not_json() -> None:
    _, err = _server("--log-level", "debug", "--log-format", "console")
    assert "nats.started" in err
    assert not any(line.startswith("{") for line in err.splitlines())
