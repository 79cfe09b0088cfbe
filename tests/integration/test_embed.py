"""ebind.embed against the real nats-server binary: lifecycle, durability config, clusters."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, TypeVar

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

from ebind import embed
from ebind._embed_proc import reserve_ports
from ebind.embed import (
    Cluster,
    EmbedError,
    Node,
    check_server_version,
    start_cluster,
    start_node,
)
from ebind.errors import InvalidArguments, ServerVersionError

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (PID 1 in a container may never reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _line_starting(stream: IO[str], prefix: str) -> str:
    for line in stream:
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line starting with {prefix!r}")


async def _connect(servers: list[str]) -> Client:
    return await nats.connect(
        servers=servers,
        connect_timeout=2,
        reconnect_time_wait=0.1,
        max_reconnect_attempts=-1,
        allow_reconnect=True,
    )


async def _retry(op: Callable[[], Awaitable[T]], *, within: float = 8.0) -> T:
    """Retry ``op`` while a raft group (re)elects and the stream answers nothing."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await op()
        except (NoStreamResponseError, ServiceUnavailableError, nats.errors.TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


class TestNode:
    def test_port_is_read_from_the_log_and_accepts_clients(self, nats_node: Node) -> None:
        assert nats_node.port > 0
        assert nats_node.http_port > 0
        assert nats_node.client_url == f"nats://127.0.0.1:{nats_node.port}"
        log_text = nats_node.log_path.read_text()
        assert f"Listening for client connections on 127.0.0.1:{nats_node.port}" in log_text
        with socket.create_connection(("127.0.0.1", nats_node.port), timeout=1) as sock:
            assert sock.recv(4).startswith(b"INFO")
        assert nats_node.pid is not None
        assert _alive(nats_node.pid)
        assert nats_node.varz()["port"] == nats_node.port

    def test_shutdown_stops_by_pid_and_removes_the_owned_store(self) -> None:
        with start_node() as node:
            pid, store = node.pid, node.store_dir
            assert pid is not None
            assert store.is_dir()
        assert node.pid is None
        assert not _alive(pid)
        assert not store.exists()

    def test_shutdown_keeps_a_callers_store(self, tmp_path: Path) -> None:
        with start_node(store_dir=tmp_path / "js") as node:
            pass
        assert node.pid is None
        assert (tmp_path / "js" / "jetstream").is_dir()

    def test_sync_interval_always_is_the_default(self, nats_node: Node) -> None:
        """The generated config and /varz both show fsync on every write."""
        assert "sync_interval: always" in nats_node.config_path.read_text()
        config = nats_node.varz()["jetstream"]["config"]
        assert config["sync_always"] is True

    @pytest.mark.parametrize("nats_node", [{"sync_interval": "default"}], indirect=True)
    def test_sync_interval_default_leaves_the_nats_default(self, nats_node: Node) -> None:
        assert "sync_interval" not in nats_node.config_path.read_text()
        config = nats_node.varz()["jetstream"]["config"]
        assert not config.get("sync_always", False)

    def test_bad_sync_interval_is_rejected_before_starting(self) -> None:
        with pytest.raises(InvalidArguments, match="sync_interval must be 'always', 'default'"):
            start_node(sync_interval="sometimes")

    async def test_kill_and_restart_keep_stream_messages(self, nats_node: Node) -> None:
        nc = await _connect([nats_node.client_url])
        js = nc.jetstream()
        await js.add_stream(name="KEEP", subjects=["keep.>"])
        for i in range(3):
            await js.publish(f"keep.{i}", f"m{i}".encode())
        await nc.close()
        port, old_pid = nats_node.port, nats_node.pid

        nats_node.kill()
        assert nats_node.pid is None
        nats_node.restart()

        assert nats_node.port == port
        assert nats_node.pid not in (None, old_pid)
        nc = await _connect([nats_node.client_url])
        try:
            js = nc.jetstream()
            info = await js.stream_info("KEEP")
            assert info.state.messages == 3
            msg = await js.get_msg("KEEP", seq=3)
            assert msg.data == b"m2"
        finally:
            await nc.close()

    def test_port_already_taken_raises_with_the_server_log(self) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            with pytest.raises(EmbedError, match="address already in use") as excinfo:
                start_node(port=port, ready_timeout=5)
        assert "nats-server exited" in str(excinfo.value)
        assert "last server log lines" in str(excinfo.value)

    def test_server_dies_with_its_parent(self) -> None:
        """PR_SET_PDEATHSIG: a SIGKILLed Python parent leaves no orphan server."""
        code = (
            "import sys, time\n"
            "from ebind.embed import start_node\n"
            "n = start_node()\n"
            "print('PID', n.pid, n.config_path.parent, flush=True)\n"
            "time.sleep(60)\n"
        )
        parent = subprocess.Popen(
            [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        assert parent.stdout is not None
        with parent.stdout:
            try:
                _, pid_text, run_dir = _line_starting(parent.stdout, "PID ").split()
                server_pid = int(pid_text)
                assert _alive(server_pid)
            finally:
                parent.kill()
                parent.wait(timeout=5)
        deadline = time.monotonic() + 5
        while _alive(server_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(run_dir, ignore_errors=True)  # the killed parent could not clean up
        assert not _alive(server_pid)


class TestServerVersion:
    @pytest.mark.parametrize("version", ["2.11.0", "2.15.1", "v2.12.3", "3.0.0-beta"])
    def test_accepts_supported(self, version: str) -> None:
        check_server_version(version)

    def test_rejects_older_naming_both_versions(self) -> None:
        with pytest.raises(
            ServerVersionError, match=r"nats-server 2\.10\.22 .*older than 2\.11\.0"
        ):
            check_server_version("2.10.22")

    def test_rejects_unparseable(self) -> None:
        with pytest.raises(ServerVersionError, match="cannot parse nats-server version 'dev'"):
            check_server_version("dev")


class TestCluster:
    def test_size_below_one_is_rejected(self) -> None:
        with pytest.raises(InvalidArguments, match="cluster size must be >= 1, got 0"):
            start_cluster(0)

    def test_a_reserved_port_taken_before_the_server_binds_it_is_retried(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """Another process binding a reserved port in the gap costs a retry, not the start."""
        calls: list[list[int]] = []
        with socket.socket() as thief:
            thief.bind(("127.0.0.1", 0))
            thief.listen(1)

            def reserve(count: int) -> list[int]:
                ports = reserve_ports(count)
                if not calls:  # the first set loses its client port to the thief
                    ports[0] = thief.getsockname()[1]
                calls.append(ports)
                return ports

            monkeypatch.setattr(embed, "reserve_ports", reserve)
            cluster = start_cluster(3, store_dir=tmp_path, ready_timeout=10)
            try:
                assert len(calls) == 2
                assert cluster.nodes[0].port == calls[1][0] != thief.getsockname()[1]
                assert cluster.meta_leader() in {"ebind-0", "ebind-1", "ebind-2"}
            finally:
                cluster.shutdown()

    def test_a_port_taken_on_every_attempt_raises_with_the_server_log(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        calls: list[int] = []
        with socket.socket() as thief:
            thief.bind(("127.0.0.1", 0))
            thief.listen(1)

            def reserve(count: int) -> list[int]:
                calls.append(count)
                return [thief.getsockname()[1], *reserve_ports(count - 1)]

            monkeypatch.setattr(embed, "reserve_ports", reserve)
            with pytest.raises(EmbedError, match="address already in use"):
                start_cluster(3, store_dir=tmp_path, ready_timeout=10)
        assert calls == [6, 6, 6]

    async def test_r3_stream_survives_losing_a_follower(self, nats_cluster: Cluster) -> None:
        assert len(nats_cluster.client_urls) == 3
        meta_leader = nats_cluster.meta_leader()
        assert meta_leader in {f"ebind-{i}" for i in range(3)}
        nc = await _connect(nats_cluster.client_urls)
        try:
            js = nc.jetstream()
            leader = await _r3_stream_with_messages(js)
            victim = next(
                i
                for i, n in enumerate(nats_cluster.nodes)
                if n.server_name not in (leader, meta_leader)
            )

            nats_cluster.kill_node(victim)
            await _retry(lambda: js.publish("ha.after", b"y"))
            info = await _retry(lambda: js.stream_info("HA"))
            assert info.state.messages == 6

            nats_cluster.restart_node(victim)
            nats_cluster.wait_healthy(victim, timeout=10)
            assert nats_cluster.nodes[victim].jsz()["streams"] == 1
        finally:
            await nc.close()

    async def test_r3_stream_survives_losing_its_leader(self, nats_cluster: Cluster) -> None:
        """The stream re-elects (several seconds of raft timeouts) and keeps every message."""
        nc = await _connect(nats_cluster.client_urls)
        try:
            js = nc.jetstream()
            leader = await _r3_stream_with_messages(js)
            victim = next(i for i, n in enumerate(nats_cluster.nodes) if n.server_name == leader)

            nats_cluster.kill_node(victim)
            await _retry(lambda: js.publish("ha.after", b"y"), within=20)
            info = await _retry(lambda: js.stream_info("HA"))
            assert info.state.messages == 6
            assert info.cluster is not None
            assert info.cluster.leader != leader
        finally:
            await nc.close()


async def _r3_stream_with_messages(js: JetStreamContext) -> str:
    """Create stream HA at R3 holding 5 messages; return its leader's server name."""
    await _retry(lambda: js.add_stream(name="HA", subjects=["ha.>"], num_replicas=3))
    for i in range(5):
        await _retry(functools.partial(js.publish, f"ha.{i}", b"x"))
    info = await js.stream_info("HA")
    assert info.cluster is not None
    assert info.cluster.leader
    return info.cluster.leader


def test_cli_server_runs_until_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "from ebind.cli.server import server; server()", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        # Unconfigured structlog also writes to stdout, so skip to the CLI's own lines.
        ready = _line_starting(proc.stdout, "nats-server ready: ")
        assert ready.startswith("nats-server ready: nats://127.0.0.1:")
        assert "sync_interval=always" in _line_starting(proc.stdout, "durability: ")
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=10)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    assert proc.returncode == 0
    assert "nats-server stopped" in rest
