"""Prometheus metrics for ebind workers (extra: ``pip install 'ebind-nats[prometheus]'``).

.. code-block:: python

    from ebind.contrib.prometheus import prometheus_middleware, start_metrics_server

    metrics = prometheus_middleware(app=app)  # a Middleware; app= enables the DLQ gauge
    server = start_metrics_server(9464)
    await app.worker(middleware=[metrics]).run()

Or ``ebind worker -A pkg.app:app --metrics-port 9464``. Exported series:

- ``ebind_tasks_total{task,outcome}``: attempts by outcome (``succeeded``, ``retrying``,
  ``dead_lettered``, ``failed``), counted once the worker has decided it.
- ``ebind_task_duration_seconds{task}``: handler run time per attempt (histogram).
- ``ebind_task_retries_total{task}``: attempts that will be retried.
- ``ebind_tasks_in_flight{task}``: handlers running now.
- ``ebind_dlq_messages``: dead letters stored in EBIND_DLQ, read from the stream when the
  endpoint is scraped (bounded wait; the last value is served if NATS is slow), or
  refreshed explicitly with :meth:`PrometheusMetrics.refresh_dlq`.
- ``ebind_queue_depth{queue,band}``: untargeted tasks waiting in each queue and priority
  band, read like the DLQ gauge (or with :meth:`PrometheusMetrics.refresh_queues`).

Health and alarms (reported by the worker and scheduler through :mod:`ebind.observe`):

- ``ebind_sweep_duration_seconds``: reconciliation sweep run time (histogram; sweeps run
  on the scheduler leader).
- ``ebind_sweep_timeouts_total`` / ``ebind_sweep_failures_total``: sweeps that passed
  their time-out / could not list DAGs.
- ``ebind_dead_letters_total{kind}``: dead letters stored by this process, by error kind.
- ``ebind_tasks_expired_total``: dead letters of kind ``expired`` (tasks that could not run
  before their retention horizon).
- ``ebind_redeliveries_total``: deliveries the server had made before (delivery count > 1).
- ``ebind_dags_live``: unfinished DAGs counted by the last sweep (0 unless leader).
- ``ebind_worker_stuck_threads``: sync handler threads still running past their timeout.
- ``ebind_progress_reports_total{task}``: progress records written by handlers (after the
  per-task rate limit of a few a second).
- ``ebind_progress_fraction``: the fractions those records carried (histogram, 0.1 buckets).
- ``ebind_rate_limited_total{task,deferred}``: tasks that waited for their rate limit, held
  by the worker (``deferred="false"``) or put back as a delayed copy (``"true"``).
- ``ebind_rate_limit_wait_seconds_total{task}``: the seconds those tasks were set to wait.
- ``ebind_scheduler_leader``: 1 while this process's scheduler holds the leader lease.

Attempts that fail before the handler chain runs (unknown task, deadline passed before
start) do not pass through middlewares; they show in the DLQ gauge.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

try:
    import prometheus_client
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the module
    raise ImportError(
        "ebind.contrib.prometheus needs prometheus-client; install ebind-nats[prometheus] "
        "(pip install 'ebind-nats[prometheus]')"
    ) from exc


from ebind import observe
from ebind.context import Context
from ebind.logging import get_logger
from ebind.streams import DLQ_STREAM
from ebind.wire import ErrorKind, TaskEnvelope, TaskError
from ebind.worker.middleware import Handler, add_outcome_listener

__all__ = ["MetricsServer", "PrometheusMetrics", "prometheus_middleware", "start_metrics_server"]

log = get_logger("ebind.contrib.prometheus")

DLQ_SCRAPE_TIMEOUT = 2.0
"""Seconds a scrape waits for EBIND_DLQ's message count before serving the last value."""

# One metrics object per registry: registering the same series twice in one registry fails.
_by_registry: dict[int, PrometheusMetrics] = {}
_lock = threading.Lock()


class _DLQCollector(Collector):
    def __init__(self, metrics: PrometheusMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Any]:
        return [GaugeMetricFamily("ebind_dlq_messages", "Dead letters stored in EBIND_DLQ.")]

    def collect(self) -> Iterator[Any]:
        value = self._metrics.dlq_for_scrape()
        if value is not None:
            yield GaugeMetricFamily(
                "ebind_dlq_messages", "Dead letters stored in EBIND_DLQ.", value=float(value)
            )


_QUEUE_DOC = "Untargeted tasks waiting, by queue and priority band."
MAX_OTHER_QUEUES = 16
"""Queues no registered task names that get a series of their own (the deepest first)."""
OTHER_QUEUES = "_other"
"""The ``queue`` label of every queue past :data:`MAX_OTHER_QUEUES`, summed."""


def bounded_queues(
    depths: dict[tuple[str, str], int], known: set[str]
) -> dict[tuple[str, str], int]:
    """``depths`` with a bounded set of queue labels: producers choose queue names freely.

    Queues the code names (``known``, and ``default``) keep their own series, so do the
    :data:`MAX_OTHER_QUEUES` deepest of the rest; the others are summed under ``_other``,
    so a producer inventing queues cannot grow every worker's scrape without bound.
    """
    totals: dict[str, int] = {}
    for (queue, _), depth in depths.items():
        totals[queue] = totals.get(queue, 0) + depth
    others = sorted(
        (q for q in totals if q not in known and q != "default"), key=lambda q: -totals[q]
    )
    named = set(totals) - set(others[MAX_OTHER_QUEUES:])
    out: dict[tuple[str, str], int] = {}
    for (queue, band), depth in depths.items():
        key = (queue if queue in named else OTHER_QUEUES, band)
        out[key] = out.get(key, 0) + depth
    return out


class _QueueCollector(Collector):
    def __init__(self, metrics: PrometheusMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Any]:
        return [GaugeMetricFamily("ebind_queue_depth", _QUEUE_DOC, labels=["queue", "band"])]

    def collect(self) -> Iterator[Any]:
        depths = self._metrics.queues_for_scrape()
        if depths is None:
            return
        family = GaugeMetricFamily("ebind_queue_depth", _QUEUE_DOC, labels=["queue", "band"])
        for (queue, band), depth in sorted(depths.items()):
            family.add_metric([queue, band], float(depth))
        yield family


_GAUGES = (
    ("ebind_dags_live", observe.GAUGE_LIVE_DAGS, "Unfinished DAGs counted by the last sweep."),
    (
        "ebind_worker_stuck_threads",
        observe.GAUGE_STUCK_THREADS,
        "Sync handler threads still running past their timeout.",
    ),
    (
        "ebind_scheduler_leader",
        observe.GAUGE_LEADER,
        "1 while this process's scheduler holds the leader lease.",
    ),
)
PROGRESS_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
"""Histogram buckets of reported progress fractions."""
SWEEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Sweep duration buckets (seconds): a sweep's default time-out is 60 s."""


class _ObservedGauges(Collector):
    """Gauges read from the worker and scheduler when scraped (0 when none runs here)."""

    def describe(self) -> list[Any]:
        return [GaugeMetricFamily(name, doc) for name, _, doc in _GAUGES]

    def collect(self) -> Iterator[Any]:
        values = observe.gauges()
        for name, key, doc in _GAUGES:
            yield GaugeMetricFamily(name, doc, value=values.get(key, 0.0))


class PrometheusMetrics:
    """Worker metrics; the instance is a Middleware (``app.worker(middleware=[metrics])``)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, app: Any = None) -> None:
        self.registry = registry if registry is not None else prometheus_client.REGISTRY
        self.app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dlq: int | None = None
        self._queues: dict[tuple[str, str], int] | None = None
        reg = self.registry
        self.tasks = prometheus_client.Counter(
            "ebind_tasks", "Task attempts by outcome.", ["task", "outcome"], registry=reg
        )
        self.duration = prometheus_client.Histogram(
            "ebind_task_duration_seconds", "Handler run time per attempt.", ["task"], registry=reg
        )
        self.retries = prometheus_client.Counter(
            "ebind_task_retries", "Attempts that will be retried.", ["task"], registry=reg
        )
        self.in_flight = prometheus_client.Gauge(
            "ebind_tasks_in_flight", "Handlers running now.", ["task"], registry=reg
        )
        reg.register(_DLQCollector(self))
        reg.register(_QueueCollector(self))
        self.sweep_duration = prometheus_client.Histogram(
            "ebind_sweep_duration_seconds",
            "Reconciliation sweep run time.",
            buckets=SWEEP_BUCKETS,
            registry=reg,
        )
        self.sweep_timeouts = prometheus_client.Counter(
            "ebind_sweep_timeouts", "Sweeps that passed their time-out.", registry=reg
        )
        self.sweep_failures = prometheus_client.Counter(
            "ebind_sweep_failures", "Sweeps that could not list DAGs.", registry=reg
        )
        self.dead_letters = prometheus_client.Counter(
            "ebind_dead_letters", "Dead letters stored, by error kind.", ["kind"], registry=reg
        )
        self.expired = prometheus_client.Counter(
            "ebind_tasks_expired",
            "Tasks dead-lettered because they could not run before their horizon.",
            registry=reg,
        )
        self.redeliveries = prometheus_client.Counter(
            "ebind_redeliveries", "Deliveries the server had made before.", registry=reg
        )
        self.redispatches = prometheus_client.Counter(
            "ebind_step_redispatches",
            "DAG step messages the sweep re-sent, by reason.",
            ["reason"],
            registry=reg,
        )
        self.progress_reports = prometheus_client.Counter(
            "ebind_progress_reports",
            "Progress records written by handlers (rate-limited per task).",
            ["task"],
            registry=reg,
        )
        self.progress_fraction = prometheus_client.Histogram(
            "ebind_progress_fraction",
            "Fractions carried by written progress records.",
            buckets=PROGRESS_BUCKETS,
            registry=reg,
        )
        waited = "Tasks that waited for their rate limit (held, or deferred as a copy)."
        self.rate_limited = prometheus_client.Counter(
            "ebind_rate_limited", waited, ["task", "deferred"], registry=reg
        )
        seconds = "Seconds tasks were set to wait for their rate limit."
        self.rate_wait = prometheus_client.Counter(
            "ebind_rate_limit_wait_seconds", seconds, ["task"], registry=reg
        )
        self.concurrency_waits = prometheus_client.Counter(
            "ebind_concurrency_waits",
            "Deliveries that found every slot of their concurrency key taken, by what they "
            "did: waited (held or not), deferred (re-published for later).",
            ["task", "action"],
            registry=reg,
        )
        reg.register(_ObservedGauges())
        self._unsubscribe: Callable[[], None] | None = None
        self.listen()

    def listen(self) -> None:
        """Count sweep, dead-letter and redelivery events from now on (idempotent)."""
        if self._unsubscribe is None:
            self._unsubscribe = observe.subscribe(self._observed)

    def _observed(self, event: str, fields: Mapping[str, Any]) -> None:
        if event == observe.REDELIVERED:
            self.redeliveries.inc()
        elif event == observe.DEAD_LETTERED:
            kind = str(fields.get("kind", ""))
            self.dead_letters.labels(kind).inc()
            if kind == ErrorKind.EXPIRED.value:
                self.expired.inc()
        elif event == observe.SWEEP_DONE:
            self.sweep_duration.observe(float(fields.get("seconds", 0.0)))
        elif event == observe.SWEEP_TIMED_OUT:
            self.sweep_timeouts.inc()
            self.sweep_duration.observe(float(fields.get("seconds", 0.0)))
        elif event == observe.SWEEP_FAILED:
            self.sweep_failures.inc()
        elif event == observe.STEP_REDISPATCHED:
            self.redispatches.labels(str(fields.get("reason", ""))).inc()
        elif event in (observe.CONCURRENCY_WAIT, observe.CONCURRENCY_DEFERRED):
            action = "waited" if event == observe.CONCURRENCY_WAIT else "deferred"
            self.concurrency_waits.labels(str(fields.get("task", "")), action).inc()
        elif event == observe.PROGRESS_WRITTEN:
            self.progress_reports.labels(str(fields.get("task", ""))).inc()
            self.progress_fraction.observe(float(fields.get("fraction", 0.0)))
        elif event == observe.RATE_LIMITED:
            task = str(fields.get("task", ""))
            self.rate_limited.labels(task, str(bool(fields.get("deferred"))).lower()).inc()
            self.rate_wait.labels(task).inc(max(float(fields.get("seconds", 0.0)), 0.0))

    def close(self) -> None:
        """Stop counting events (the series stay registered; ``listen()`` resumes)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def bind(self, app: Any) -> None:
        """Read the DLQ size through ``app`` (a connected ebind App)."""
        self.app = app

    def __call__(self, next_handler: Handler) -> Handler:
        """Wrap ``next_handler`` (this makes the instance a Middleware)."""

        async def measured(ctx: Context, env: TaskEnvelope) -> bytes:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()  # scrapes hop onto this loop
            name = env.name

            def on_outcome(outcome: str, error: TaskError | None) -> None:
                self.tasks.labels(name, outcome).inc()
                if outcome == "retrying":
                    self.retries.labels(name).inc()

            add_outcome_listener(ctx, on_outcome)
            gauge = self.in_flight.labels(name)
            gauge.inc()
            start = time.perf_counter()
            try:
                return await next_handler(ctx, env)
            finally:
                gauge.dec()
                self.duration.labels(name).observe(time.perf_counter() - start)

        return measured

    async def refresh_dlq(self) -> int | None:
        """Read EBIND_DLQ's message count now (None without an app)."""
        if self.app is None:
            return None
        info = await self.app.js.stream_info(DLQ_STREAM)
        self._dlq = int(info.state.messages or 0)
        return self._dlq

    async def refresh_queues(self) -> dict[tuple[str, str], int] | None:
        """Read the tasks waiting per (queue, band) now (None without an app)."""
        if self.app is None:
            return None
        from ebind.inspection import queue_depths

        self._queues = bounded_queues(await queue_depths(self.app.js), self._known_queues())
        return self._queues

    def _known_queues(self) -> set[str]:
        """Queues this process's code names (its registered tasks'), always shown by name."""
        registry = getattr(self.app, "registry", None)
        if registry is None:
            return set()
        return {
            spec.queue for name in registry.names() if (spec := registry.get(name)) and spec.queue
        }

    def dlq_for_scrape(self) -> int | None:
        """The DLQ size for a scrape: fresh when reachable in time, else the last value."""
        self._refresh_for_scrape(self.refresh_dlq, "dlq")
        return self._dlq

    def queues_for_scrape(self) -> dict[tuple[str, str], int] | None:
        """Queue depths for a scrape: fresh when reachable in time, else the last values."""
        self._refresh_for_scrape(self.refresh_queues, "queues")
        return self._queues

    def _refresh_for_scrape(self, refresh: Callable[[], Any], what: str) -> None:
        """Run ``refresh`` on the worker's loop within the scrape timeout (never on it)."""
        loop = self._loop
        if self.app is None or loop is None or loop.is_closed():
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            return  # blocking here would deadlock the loop we wait on
        fut = asyncio.run_coroutine_threadsafe(refresh(), loop)
        try:
            fut.result(DLQ_SCRAPE_TIMEOUT)
        except FutureTimeout:
            fut.cancel()
            log.warning(f"metrics.{what}_refresh_slow", timeout=DLQ_SCRAPE_TIMEOUT)
        except Exception as exc:
            log.warning(f"metrics.{what}_refresh_failed", error=str(exc))


def prometheus_middleware(
    registry: CollectorRegistry | None = None, *, app: Any = None
) -> PrometheusMetrics:
    """The metrics Middleware for ``registry`` (default: the global one), one per registry."""
    reg = registry if registry is not None else prometheus_client.REGISTRY
    with _lock:
        metrics = _by_registry.get(id(reg))
        if metrics is None or metrics.registry is not reg:
            metrics = _by_registry[id(reg)] = PrometheusMetrics(reg, app=app)
    if app is not None:
        metrics.bind(app)
    metrics.listen()
    return metrics


@dataclass
class MetricsServer:
    """A running ``/metrics`` HTTP endpoint; ``close()`` stops it."""

    port: int
    _httpd: Any
    _thread: threading.Thread

    @property
    def url(self) -> str:
        """The scrape URL."""
        host, _ = self._httpd.server_address[:2]
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve ``/metrics`` from a daemon thread; port 0 picks a free port (see ``.port``)."""
    reg = registry if registry is not None else prometheus_client.REGISTRY
    httpd, thread = prometheus_client.start_http_server(port, addr=addr, registry=reg)
    bound = int(httpd.server_address[1])
    log.info("metrics.serving", addr=addr, port=bound)
    return MetricsServer(bound, httpd, thread)
