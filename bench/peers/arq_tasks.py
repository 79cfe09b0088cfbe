"""arq's side: Redis, with the polling intervals tuned down from their 0.5 s defaults.

Worker: ``arq arq_tasks.WorkerSettings`` with ``REDIS_URL`` set. Client:
``python arq_tasks.py enqueue --url redis://...``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any, ClassVar

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from common import measure, parse

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
POLL = 0.005  # seconds; both the worker's queue poll and the client's result poll
# arq logs two lines per job at INFO; the other workers run at warning level too.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"err": {"class": "logging.StreamHandler"}},
    "loggers": {"arq": {"handlers": ["err"], "level": "WARNING"}},
}


async def noop(_ctx: dict[str, Any]) -> None:
    """Does nothing."""


class WorkerSettings:
    """What ``arq`` reads: the functions, the Redis address, the tuned poll."""

    functions: ClassVar[list[Any]] = [noop]
    redis_settings = RedisSettings.from_dsn(URL)
    max_jobs = 16
    poll_delay = POLL


async def batch(pool: ArqRedis, n: int) -> None:
    """A loop of ``enqueue_job()``, then every result."""
    jobs = [await pool.enqueue_job("noop") for _ in range(n)]
    for job in jobs:
        assert job is not None
        await job.result(timeout=120, poll_delay=POLL)


def main() -> None:
    args = parse(sys.argv[2:])
    with asyncio.Runner() as runner:
        pool = runner.run(create_pool(RedisSettings.from_dsn(args.url)))
        measure(args, lambda n: runner.run(batch(pool, n)), lambda: runner.run(batch(pool, 1)))
        runner.run(pool.aclose())


if __name__ == "__main__":
    main()
