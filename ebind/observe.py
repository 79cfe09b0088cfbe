"""Observer hooks: the core reports what it measures; metrics exporters listen.

The worker, runner and scheduler call :func:`emit` for countable happenings (a sweep
finished, a task was dead-lettered) and register gauge sources read on demand (stuck
threads, scheduler leadership). Nothing here imports an exporter: ``ebind.contrib.prometheus``
subscribes when it is used, and without listeners :func:`emit` costs one truth test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from ebind.logging import get_logger

__all__ = [
    "DEAD_LETTERED",
    "GAUGE_LEADER",
    "GAUGE_LIVE_DAGS",
    "GAUGE_STUCK_THREADS",
    "RATE_LIMITED",
    "REDELIVERED",
    "STEP_REDISPATCHED",
    "SWEEP_DONE",
    "SWEEP_FAILED",
    "SWEEP_TIMED_OUT",
    "GaugeSource",
    "Listener",
    "add_gauge_source",
    "emit",
    "gauges",
    "subscribe",
]

log = get_logger("ebind.observe")
_T = TypeVar("_T")

Listener = Callable[[str, Mapping[str, Any]], None]
"""Called with an event name and its fields, on the thread that emitted it."""
GaugeSource = Callable[[], Mapping[str, float]]
"""Returns current gauge values by name; called from whichever thread reads gauges."""

SWEEP_DONE = "sweep.done"
"""A reconciliation sweep finished: ``seconds``, ``dags`` (live DAGs swept), ``failed``."""
SWEEP_TIMED_OUT = "sweep.timed_out"
"""A reconciliation sweep passed its time-out: ``seconds``."""
SWEEP_FAILED = "sweep.failed"
"""A reconciliation sweep could not list DAGs: ``seconds``, ``error``."""
DEAD_LETTERED = "task.dead_lettered"
"""A dead letter was stored: ``kind`` (the error kind, e.g. ``expired``)."""
REDELIVERED = "task.redelivered"
"""A worker received a message delivered before: ``delivery`` (the server's count)."""
STEP_REDISPATCHED = "step.redispatched"
"""The sweep re-sent a DAG step's message: ``reason`` (lost, orphaned, unknown, probe)."""
PROGRESS_WRITTEN = "task.progress"
"""A task's progress record was written (rate-limited): ``task`` (its name), ``fraction``."""
CONCURRENCY_WAIT = "task.concurrency_wait"
"""A delivery found every slot of its concurrency key taken and waits: ``task``."""
CONCURRENCY_DEFERRED = "task.concurrency_deferred"
"""A waiting task was re-published to come back later: ``task``."""

RATE_LIMITED = "task.rate_limited"
"""A task waited for its rate limit: ``task`` (its name), ``seconds``, ``deferred`` (a copy
was published for later instead of holding the delivery)."""

GAUGE_STUCK_THREADS = "worker_stuck_threads"
"""Sync handler threads still running past their timeout."""
GAUGE_LEADER = "scheduler_leader"
"""1 while this process's scheduler holds the leader lease."""
GAUGE_LIVE_DAGS = "dags_live"
"""DAGs not yet finished, as counted by the leader's last sweep (0 on followers)."""


class _Hooks(Generic[_T]):
    """An append-only set of callbacks swapped whole, so readers iterate without a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: tuple[_T, ...] = ()

    def add(self, item: _T) -> Callable[[], None]:
        with self._lock:
            self.items = (*self.items, item)

        def remove() -> None:
            with self._lock:
                self.items = tuple(x for x in self.items if x is not item)

        return remove


_listeners: _Hooks[Listener] = _Hooks()
_sources: _Hooks[GaugeSource] = _Hooks()


def subscribe(listener: Listener) -> Callable[[], None]:
    """Call ``listener`` for every event from now on; returns a function that unsubscribes."""
    return _listeners.add(listener)


def emit(event: str, **fields: Any) -> None:
    """Tell every listener about ``event``; a failing listener is logged, never raised."""
    listeners = _listeners.items
    if not listeners:
        return
    for listener in listeners:
        try:
            listener(event, fields)
        except Exception:
            log.exception("observe.listener_failed", event_name=event)


def add_gauge_source(source: GaugeSource) -> Callable[[], None]:
    """Include ``source`` in :func:`gauges` until the returned function is called."""
    return _sources.add(source)


def gauges() -> dict[str, float]:
    """Every gauge summed over the registered sources (several workers in one process add up)."""
    total: dict[str, float] = {}
    for source in _sources.items:
        try:
            values = source()
        except Exception:
            log.exception("observe.gauge_source_failed")
            continue
        for name, value in values.items():
            total[name] = total.get(name, 0.0) + float(value)
    return total
