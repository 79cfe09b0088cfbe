"""Health checks for a running worker: ``/livez`` and ``/readyz`` over plain HTTP.

.. code-block:: python

    worker = app.worker(health_port=8080)          # served while the worker runs
    # or, around a Worker you run yourself:
    endpoint = await serve_health(worker, port=8080)
    ...
    await endpoint.close()

The decisions (:func:`readiness`, :func:`liveness`) are pure functions of a
:class:`HealthInputs` snapshot. A probe task on the worker's event loop takes that snapshot
every :data:`PROBE_INTERVAL` seconds and measures how late it woke up (event-loop stalls).
The HTTP server runs on its own thread and event loop, so it still answers while the
worker's loop is blocked: ``/livez`` then says 503 because the probe's heartbeat is old.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ebind.logging import get_logger

if TYPE_CHECKING:
    from ebind.worker.worker import Worker

__all__ = [
    "DEFAULT_HEALTH_HOST",
    "MAX_CONNECTIONS",
    "HealthEndpoint",
    "HealthInputs",
    "HealthLimits",
    "HealthServeError",
    "StallTracker",
    "Verdict",
    "check_port",
    "liveness",
    "readiness",
    "serve_health",
]

log = get_logger("ebind.worker.health")

DEFAULT_HEALTH_HOST = "127.0.0.1"
"""Health endpoints listen on loopback unless told otherwise."""
PROBE_INTERVAL = 0.2
"""Seconds between snapshots taken on the worker's loop (also the stall resolution)."""
_STALL_FLOOR = 0.05
"""Lateness below this is scheduling noise, not a stall worth remembering."""
_REQUEST_TIMEOUT = 5.0
"""Seconds a client gets to send its request line and headers."""
_MAX_REQUEST_LINE = 8192
MAX_CONNECTIONS = 64
"""Connections still sending their request at once; a newcomer past it evicts the oldest."""


class HealthServeError(OSError):
    """The health endpoint could not bind its address (the message names it)."""


# ---------------------------------------------------------------------------- pure core
@dataclass(frozen=True)
class HealthInputs:
    """What the worker looked like at one probe tick (plus the age of that tick)."""

    running: bool
    """``Worker.run()`` is active and no stop was requested."""
    stopping: bool
    """A graceful or cancelled stop is under way."""
    consumers_created: bool
    """Setup finished: the shared consumer and the claim consumers exist."""
    nats_connected: bool
    unavailable_consumers: tuple[str, ...] = ()
    """Durables being re-created or answering "no responders" (no leader, deleted)."""
    stuck_threads: int = 0
    concurrency: int = 1
    worst_stall: float = 0.0
    """Longest event-loop stall (seconds) seen within the stall window."""
    heartbeat_age: float = 0.0
    """Seconds since the probe on the worker's loop last ran."""


@dataclass(frozen=True)
class HealthLimits:
    """Thresholds (seconds) that turn measurements into "not ready" / "not live"."""

    stall_limit: float = 1.0
    """A loop stall longer than this within ``stall_window`` makes the worker not ready."""
    stall_window: float = 30.0
    """How long a stall keeps counting against readiness."""
    live_limit: float = 10.0
    """A probe heartbeat older than this means the loop does not answer: not live."""

    def __post_init__(self) -> None:
        for name in ("stall_limit", "stall_window", "live_limit"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"health {name} must be > 0 seconds, got {value!r}")


@dataclass(frozen=True)
class Verdict:
    """A health decision and the reasons against it (empty when healthy)."""

    ok: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)


def readiness(inputs: HealthInputs, limits: HealthLimits) -> Verdict:
    """Ready only when connected, consuming, not stalled and not out of threads."""
    reasons: list[str] = []
    if inputs.stopping:
        reasons.append("worker stopping")
    elif not inputs.running:
        reasons.append("worker not running")
    elif not inputs.consumers_created:
        reasons.append("consumers not created yet")
    if not inputs.nats_connected:
        reasons.append("nats disconnected")
    reasons.extend(f"consumer {d} unavailable" for d in inputs.unavailable_consumers)
    if inputs.stuck_threads >= inputs.concurrency:
        reasons.append(
            f"all {inputs.concurrency} slots held by stuck sync threads "
            "(handlers running past their timeout)"
        )
    if inputs.heartbeat_age > limits.live_limit:
        reasons.append(f"event loop not answering for {inputs.heartbeat_age:.1f} s")
    elif inputs.worst_stall > limits.stall_limit:
        reasons.append(
            f"event loop stalled {inputs.worst_stall:.2f} s (limit {limits.stall_limit:g} s) "
            f"within the last {limits.stall_window:g} s"
        )
    return Verdict(not reasons, tuple(reasons))


def liveness(heartbeat_age: float, limits: HealthLimits) -> Verdict:
    """Live while the worker's event loop keeps running its probe."""
    if heartbeat_age > limits.live_limit:
        return Verdict(False, (f"event loop not answering for {heartbeat_age:.1f} s",))
    return Verdict(True)


def check_port(port: object) -> int:
    """``port`` if it is a TCP port number (0 = any free port), else ValueError naming it."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"health port must be an integer from 0 to 65535, got {port!r}")
    return port


class StallTracker:
    """Recent event-loop stalls, so "the worst stall in the last N seconds" is cheap."""

    def __init__(self, window: float = 30.0) -> None:
        self.window = window
        self._stalls: collections.deque[tuple[float, float]] = collections.deque()
        self.last: float = 0.0
        """The most recent lateness measured (seconds), stall or not."""

    def record(self, late: float, now: float | None = None) -> None:
        """Note that a timer fired ``late`` seconds after it was due."""
        self.last = max(0.0, late)
        if late < _STALL_FLOOR:
            return
        at = time.monotonic() if now is None else now
        self._stalls.append((at, late))
        self._prune(at)

    def worst(self, now: float | None = None) -> float:
        """The longest stall (seconds) recorded within the window; 0.0 when none."""
        self._prune(time.monotonic() if now is None else now)
        return max((late for _, late in self._stalls), default=0.0)

    def _prune(self, now: float) -> None:
        while self._stalls and now - self._stalls[0][0] > self.window:
            self._stalls.popleft()


# ---------------------------------------------------------------------------- the shell
def _connected(app: Any) -> bool:
    try:
        return bool(app.nc.is_connected)
    except Exception:  # App.nc raises before connect() and after close()
        return False


def snapshot(worker: Worker) -> HealthInputs:
    """Read the worker's state (on its own loop) into a :class:`HealthInputs`."""
    return HealthInputs(
        running=worker.is_running and not worker.is_stopping,
        stopping=worker.is_stopping,
        consumers_created=worker.is_consuming,
        nats_connected=_connected(worker.app),
        unavailable_consumers=worker.unavailable_consumers,
        stuck_threads=worker.stuck_threads,
        concurrency=worker.concurrency,
        worst_stall=worker.loop_stalls.worst(),
    )


@dataclass
class _Beat:
    at: float
    inputs: HealthInputs


class HealthEndpoint:
    """``/livez`` and ``/readyz`` of one worker; ``await close()`` stops serving."""

    def __init__(self, worker: Worker, limits: HealthLimits) -> None:
        self.worker = worker
        self.limits = limits
        self.host = DEFAULT_HEALTH_HOST
        self.port = 0
        self._beat = _Beat(time.monotonic(), snapshot(worker))
        self._probe: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        # Connections still sending their request, oldest first (dicts keep insertion order).
        self._reading: dict[asyncio.StreamWriter, None] = {}
        """Connections being served (only the endpoint's own loop touches it)."""

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8080``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -- worker loop side
    async def _run_probe(self) -> None:
        tracker = self.worker.loop_stalls
        due = time.monotonic() + PROBE_INTERVAL
        while True:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            now = time.monotonic()
            tracker.record(now - due, now)
            # One reference swap: the server thread reads a whole snapshot or the previous one.
            self._beat = _Beat(now, snapshot(self.worker))
            due = now + PROBE_INTERVAL

    # -- server thread side
    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        """Status code and JSON body for ``path`` (called on the server thread)."""
        beat = self._beat
        age = max(0.0, time.monotonic() - beat.at)
        if path == "/livez":
            v = liveness(age, self.limits)
            return (200 if v.ok else 503), {"live": v.ok, "reasons": list(v.reasons)}
        if path == "/readyz":
            inputs = beat.inputs
            v = readiness(dataclasses.replace(inputs, heartbeat_age=age), self.limits)
            body: dict[str, Any] = {
                "ready": v.ok,
                "reasons": list(v.reasons),
                "worker_id": self.worker.worker_id,
                "stuck_threads": inputs.stuck_threads,
                "loop_stall_ms": round(inputs.worst_stall * 1000),
            }
            return (200 if v.ok else 503), body
        return 404, {"error": f"no such path {path!r}; use /livez or /readyz"}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._reading) >= MAX_CONNECTIONS:
            # Probes are short; this many still sending is someone holding connections (each
            # a file descriptor of the worker process). The oldest goes, not the newcomer: a
            # client holding connections open must not lock the orchestrator's probe out.
            oldest = next(iter(self._reading))
            del self._reading[oldest]
            oldest.transport.abort()
        self._reading[writer] = None
        try:
            await self._serve(reader, writer)
        finally:
            self._reading.pop(writer, None)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                request = await reader.readline()
                while (await reader.readline()).strip():
                    pass  # headers are not needed
            self._reading.pop(writer, None)  # read whole: no longer a candidate to evict
            parts = request.decode("latin-1").split()
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                status, body = 400, {"error": "malformed HTTP request line"}
            elif parts[0] not in ("GET", "HEAD"):
                status, body = 405, {"error": f"method {parts[0]} not allowed; use GET"}
            else:
                status, body = self.answer(parts[1].split("?", 1)[0])
            payload = json.dumps(body).encode()
            head = (
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
            ).encode()
            writer.write(head if parts and parts[0] == "HEAD" else head + payload)
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass  # a slow, vanished or oversized client: just drop the connection
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _start(self, host: str, port: int) -> None:
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(started.set)
            loop.run_forever()

        thread = threading.Thread(target=run, name="ebind-health", daemon=True)
        thread.start()
        await asyncio.to_thread(started.wait, 5.0)
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, host, port, limit=_MAX_REQUEST_LINE), loop
        )
        try:
            server = await asyncio.wrap_future(fut)
        except OSError as exc:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5.0)
            loop.close()
            err = HealthServeError(
                f"cannot serve health checks on {host}:{port}: {exc.strerror or exc}"
            )
            err.errno = exc.errno
            raise err from exc
        self._loop, self._thread, self._server = loop, thread, server
        self.host = host
        self.port = int(server.sockets[0].getsockname()[1])
        self._probe = asyncio.create_task(self._run_probe(), name="ebind-health-probe")
        log.info("health.serving", url=self.url, worker_id=self.worker.worker_id)

    async def close(self) -> None:
        """Stop the probe and the HTTP server, and release the port."""
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(BaseException):
                await self._probe
            self._probe = None
        loop, thread, server = self._loop, self._thread, self._server
        self._loop = self._thread = self._server = None
        if loop is None or thread is None or server is None:
            return

        async def shut() -> None:
            server.close()
            await server.wait_closed()

        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                asyncio.wrap_future(asyncio.run_coroutine_threadsafe(shut(), loop)), 5.0
            )
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join, 5.0)
        loop.close()


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


async def serve_health(
    worker: Worker,
    *,
    port: int = 0,
    host: str = DEFAULT_HEALTH_HOST,
    limits: HealthLimits | None = None,
) -> HealthEndpoint:
    """Serve ``/livez`` and ``/readyz`` for ``worker`` (port 0 picks a free port, see ``.port``).

    Call it on the worker's event loop; raises :class:`HealthServeError` naming the
    address when the port cannot be bound.
    """
    endpoint = HealthEndpoint(worker, limits or HealthLimits())
    await endpoint._start(host, check_port(port))
    return endpoint
