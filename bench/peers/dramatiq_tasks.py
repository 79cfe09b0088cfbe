"""Dramatiq's side: Redis broker with the Results middleware on a Redis backend.

Worker: ``dramatiq dramatiq_tasks -p 2 -t 8`` with ``REDIS_URL`` set. Client:
``python dramatiq_tasks.py send --url redis://...``.
"""

from __future__ import annotations

import os
import sys

import dramatiq
from common import measure, parse
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
broker = RedisBroker(url=URL)
broker.add_middleware(Results(backend=RedisBackend(url=URL)))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True)
def noop() -> None:
    """Does nothing."""


def batch(n: int) -> None:
    """A loop of ``send()``, then every result (blocking)."""
    messages = [noop.send() for _ in range(n)]
    for m in messages:
        m.get_result(block=True, timeout=120_000)


def one() -> None:
    """One round trip."""
    noop.send().get_result(block=True, timeout=30_000)


def main() -> None:
    args = parse(sys.argv[2:])
    measure(args, batch, one)


if __name__ == "__main__":
    main()
