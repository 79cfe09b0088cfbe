"""The health endpoint holds a bounded number of connections at once (a newcomer past the
bound evicts the oldest half-open one), so a client holding half-open requests cannot take
the worker's file descriptors."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from worker_helpers import running

from ebind.app import App

pytestmark = pytest.mark.timeout(60)

CLIENT = r"""
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /livez HTTP/1.1\r\n")  # request line, then never the blank line
    socks.append(s)
print("open", flush=True)
time.sleep(4)
"""


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _top() -> int:
    return max(int(x) for x in os.listdir("/proc/self/fd"))


async def test_the_health_endpoint_holds_a_bounded_number_of_connections(app: App) -> None:
    @app.task(name="hc.echo")
    async def echo(x: int) -> int:
        return x

    n = 400
    async with running(app, health_port=0) as worker:
        assert worker.health is not None
        before = _fds()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLIENT, str(worker.health.port), str(n), stdout=subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            await asyncio.wait_for(proc.stdout.readline(), 20)
            await asyncio.sleep(1.0)
            held = _fds() - before
        finally:
            await proc.wait()
        # Every half-open request would cost the worker a descriptor for the request timeout
        # (a client renewing them would hold them for good); past the cap they are closed.
        assert held < 100, f"{held} fds of the worker process held by idle health clients"
