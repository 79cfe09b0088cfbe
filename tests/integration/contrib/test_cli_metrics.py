"""``ebind worker --metrics-port``: a real worker process serving /metrics."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ebind.app import App

HERE = Path(__file__).parent
ROOT = HERE.parent.parent.parent


def _read_until(proc: subprocess.Popen[bytes], pattern: bytes, timeout: float = 20.0) -> bytes:
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    deadline, buf = time.monotonic() + timeout, b""
    while time.monotonic() < deadline:
        buf += proc.stdout.read() or b""
        if re.search(pattern, buf):
            return buf
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} from the worker:\n{buf.decode(errors='replace')}")


async def _double(nats_url: str) -> int:
    async with App("metrics-producer", nats_url=nats_url) as app:
        result: int = await (await app.enqueue("double", 21)).result(timeout=10)
        return result


def test_worker_serves_metrics_on_the_given_port(nats_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
    cmd = [sys.executable, "-m", "ebind", "worker", "-A", "metrics_app:app", "--nats", nats_url]
    proc = subprocess.Popen(
        [*cmd, "--no-scheduler", "--metrics-port", "0", "--metrics-addr", "127.0.0.1"],
        cwd=HERE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        # one read for both lines: they may come in the same chunk
        out = _read_until(proc, rb"metrics at http://127\.0\.0\.1:\d+/metrics(.|\n)*ready")
        url = re.search(rb"(http://127\.0\.0\.1:\d+/metrics)", out).group(1).decode()  # type: ignore[union-attr]
        assert asyncio.run(_double(nats_url)) == 42
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        assert 'ebind_tasks_total{outcome="succeeded",task="double"} 1.0' in text
        assert "ebind_dlq_messages 0.0" in text
        # Alarm series exist from the start (this worker runs no scheduler).
        for line in ("ebind_scheduler_leader 0.0", "ebind_worker_stuck_threads 0.0"):
            assert line in text
        assert "ebind_sweep_timeouts_total 0.0" in text and "ebind_redeliveries_total" in text
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
