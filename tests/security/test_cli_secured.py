"""``ebind worker`` with connection flags against each secured server, and the dev server's
``--token``: generated, printed with the line clients use, and enforced."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from secured import MODES, Secured, cli, flags, make_app, options

from ebind.connection import ENV, ConnectionSettings

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def _env() -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ENV.values()}
    return {**base, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]), "PYTHONUNBUFFERED": "1"}


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ebind", *args],
        cwd=HERE,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def _read_until(proc: subprocess.Popen[bytes], pattern: bytes, timeout: float = 20.0) -> bytes:
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    deadline, buf = time.monotonic() + timeout, b""
    while time.monotonic() < deadline:
        buf += proc.stdout.read() or b""
        if re.search(pattern, buf):
            return buf
        if proc.poll() is not None:
            buf += proc.stdout.read() or b""
            break
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r}:\n{buf.decode(errors='replace')}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(params=sorted(MODES))
def secured(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Secured]:
    """A server for one auth mode, shut down by PID after the test."""
    made = MODES[request.param](tmp_path)
    try:
        yield made
    finally:
        made.node.shutdown()


async def _add(url: str, good: ConnectionSettings) -> int:
    async with make_app(url, "cli-producer", **options(good)) as app:
        return int(await (await app.enqueue("sec.add", 40, 2)).result(timeout=15))


def test_worker_connects_with_flags(secured: Secured) -> None:
    url = secured.node.client_url
    proc = _spawn(
        *("worker", "-A", "leak_app:app", "--nats", url, "--no-scheduler"),
        *("--ack-wait", "2", "--shutdown-grace", "2", "--log-level", "warning"),
        *flags(secured.good),
    )
    try:
        _read_until(proc, rb"ebind worker \S+ ready")
        assert asyncio.run(_add(url, secured.good)) == 42
    finally:
        _stop(proc)


def test_worker_with_wrong_credentials_exits_with_one_line(secured: Secured) -> None:
    url = secured.node.client_url
    proc = _spawn(
        *("worker", "-A", "leak_app:app", "--nats", url, "--no-scheduler"),
        *("--log-level", "error", "--log-format", "json"),
        *flags(secured.bad),
    )
    try:
        assert proc.wait(15) == 1
    finally:
        _stop(proc)
    assert proc.stdout is not None
    lines = proc.stdout.read().decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and url in lines[0], lines


def test_worker_metrics_bind_loopback_by_default(nats_url: str) -> None:
    proc = _spawn(
        *("worker", "-A", "leak_app:app", "--nats", nats_url, "--no-scheduler"),
        *("--metrics-port", "0", "--log-level", "warning"),
    )
    try:
        out = _read_until(proc, rb"metrics at http://[^:]+:\d+/metrics")
        assert re.search(rb"metrics at http://127\.0\.0\.1:\d+/metrics", out), out
    finally:
        _stop(proc)


def test_server_generates_and_enforces_a_token() -> None:
    proc = _spawn("server", "--port", "0", "--token", "generate")
    try:
        out = _read_until(proc, rb"export EBIND_NATS_TOKEN=\S+\n").decode()
        url = re.search(r"nats-server ready: (nats://\S+)", out)
        token = re.search(r"export EBIND_NATS_TOKEN=(\S+)", out)
        assert url is not None and token is not None, out
        assert url.group(1).startswith("nats://127.0.0.1:")
        ok = cli(url.group(1), "stream", "ls", environ={"EBIND_NATS_TOKEN": token.group(1)})
        assert ok.exit_code == 0, ok.stderr
        assert "EBIND_TASKS" in ok.stdout
        refused = cli(url.group(1), "stream", "ls")
        assert refused.exit_code == 1
        assert refused.stderr.startswith("Error: NATS at nats://127.0.0.1:")
        assert "refused the credentials" in refused.stderr
    finally:
        _stop(proc)


def test_server_with_a_given_token_does_not_print_it() -> None:
    secret = "given-token-9f8e7d6c"
    proc = _spawn("server", "--port", "0", "--token", secret)
    try:
        out = _read_until(proc, rb"press Ctrl-C to stop").decode()
        assert secret not in out
        assert "clients must present the token" in out
        url = re.search(r"nats-server ready: (nats://\S+)", out)
        assert url is not None
        ok = cli(url.group(1), "stream", "ls", "--token", secret)
        assert ok.exit_code == 0, ok.stderr
    finally:
        _stop(proc)


def test_cluster_nodes_require_the_token() -> None:
    from ebind.embed import ServerAuth, start_cluster

    token = "cluster-token-5a4b3c2d"
    cluster = start_cluster(2, auth=ServerAuth(token=token), ready_timeout=30)
    try:
        for node in cluster.nodes:
            varz = node.varz()  # clients, monitoring and routes all on loopback
            assert (varz["host"], varz["http_host"]) == ("127.0.0.1", "127.0.0.1")
            assert varz["cluster"]["addr"] == "127.0.0.1" and varz["auth_required"] is True
        for url in cluster.client_urls:
            assert url.startswith("nats://127.0.0.1:")
            refused = cli(url, "stream", "ls")
            assert refused.exit_code == 1 and "refused the credentials" in refused.stderr
        ok = cli(",".join(cluster.client_urls), "stream", "ls", environ={"EBIND_NATS_TOKEN": token})
        assert ok.exit_code == 0, ok.stderr
    finally:
        cluster.shutdown()
