"""Celery's side: Redis as broker and result backend, tasks written the usual way.

Worker: ``celery -A celery_tasks worker -P prefork|threads|solo`` with ``REDIS_URL`` set.
Client: ``python celery_tasks.py delay|chord --url redis://...``.
"""

from __future__ import annotations

import os
import sys
import time

from celery import Celery, chord
from common import measure, measure_dag, parse

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("peers", broker=URL, backend=URL)
app.conf.update(worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


@app.task(name="peers.noop")
def noop() -> None:
    """Does nothing."""


@app.task(name="peers.inc")
def inc(x: int) -> int:
    """One chord header task."""
    return x + 1


@app.task(name="peers.total")
def total(xs: list[int]) -> int:
    """The chord callback."""
    return sum(xs)


def batch(n: int) -> None:
    """A loop of ``delay()``, then every ``get()``."""
    results = [noop.delay() for _ in range(n)]
    for r in results:
        r.get(timeout=120)


def one() -> None:
    """One round trip."""
    noop.delay().get(timeout=30)


def fan(leaves: int) -> float:
    """``chord(leaves no-ops)(callback)``; returns the time the submit took."""
    t0 = time.perf_counter()
    res = chord(inc.s(i) for i in range(leaves))(total.s())
    submit = time.perf_counter() - t0
    assert res.get(timeout=300) == sum(range(1, leaves + 1))
    return submit


def main() -> None:
    workload, args = sys.argv[1], parse(sys.argv[2:])
    if workload == "chord":
        measure_dag(args, fan)
    else:
        measure(args, batch, one)


if __name__ == "__main__":
    main()
