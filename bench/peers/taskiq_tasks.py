"""taskiq-nats' side: the pull-based JetStream broker, with and without its result backend.

Worker: ``taskiq worker taskiq_tasks:broker`` (or ``taskiq_tasks:broker_results``) with
``NATS_URL`` set. Client: ``python taskiq_tasks.py results|fire --url nats://...``. Without
results, the client knows the tasks are done when the consumer has acknowledged them all.
"""

from __future__ import annotations

import asyncio
import os
import sys

from common import measure, parse
from nats.js.errors import NotFoundError
from taskiq_nats import NATSObjectStoreResultBackend, PullBasedJetStreamBroker

URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
POLL = 0.005  # seconds between result checks (wait_result's default is 0.2)
# One message per pull, the default: with a larger batch and no pull timeout nats-py's fetch
# holds the first messages until the batch fills, and with a timeout it holds them that long.
broker = PullBasedJetStreamBroker(URL)
broker_results = PullBasedJetStreamBroker(
    URL, stream_name="taskiq_results_stream", subject="taskiq_r"
).with_result_backend(NATSObjectStoreResultBackend(URL))


@broker.task(task_name="peers.noop")
async def noop() -> None:
    """Does nothing."""


@broker_results.task(task_name="peers.noop")
async def noop_r() -> None:
    """Does nothing, and the result is stored."""


async def with_results(n: int) -> None:
    """A loop of ``kiq()``, then every ``wait_result()``."""
    tasks = [await noop_r.kiq() for _ in range(n)]
    for t in tasks:
        res = await t.wait_result(check_interval=POLL, timeout=120)
        assert not res.is_err


async def fire(n: int) -> None:
    """A loop of ``kiq()``, then wait until the worker has acknowledged every message."""
    for _ in range(n):
        await noop.kiq()
    last = (await broker.js.stream_info(broker.stream_name)).state.last_seq
    for _ in range(120_000):
        try:
            info = await broker.js.consumer_info(broker.stream_name, broker.durable)
        except NotFoundError:  # the worker has not created it yet
            info = None
        if info is not None and info.ack_floor.stream_seq >= last:
            return
        await asyncio.sleep(0.001)
    raise TimeoutError("the worker did not acknowledge every task in time")


def main() -> None:
    workload, args = sys.argv[1], parse(sys.argv[2:])
    b = broker_results if workload == "results" else broker
    with asyncio.Runner() as runner:
        runner.run(b.startup())
        if workload == "results":
            measure(
                args, lambda n: runner.run(with_results(n)), lambda: runner.run(with_results(1))
            )
        else:
            measure(args, lambda n: runner.run(fire(n)), None)
        runner.run(b.shutdown())


if __name__ == "__main__":
    main()
