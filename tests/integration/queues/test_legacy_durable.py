"""Upgrading from the single shared durable: the first new worker retires it, nothing is lost."""

from __future__ import annotations

import pytest
import structlog
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

from ebind.app import App
from ebind.queues import lane_durable
from ebind.streams import TASKS_STREAM, WORKER_DURABLE
from tests.integration.worker.worker_helpers import running


async def test_the_shared_durable_is_removed_and_its_messages_reach_the_lanes(
    nats_url: str,
) -> None:
    app = App("upgrade", nats_url=nats_url)
    await app.connect()
    try:

        @app.task(name="mig.job")
        async def job(n: int) -> int:
            return n + 1

        # what an older release left behind: its durable, one message it delivered and
        # never acked (a worker that died), and queued ones
        await app.js.add_consumer(
            TASKS_STREAM,
            ConsumerConfig(
                durable_name=WORKER_DURABLE,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=30,
                filter_subject="TASKS.>",
            ),
        )
        futs = [await job.delay(i) for i in range(3)]
        sub = await app.js.pull_subscribe_bind(WORKER_DURABLE, stream=TASKS_STREAM)
        (taken,) = await sub.fetch(1, timeout=5)
        await sub.unsubscribe()
        assert taken.subject == "TASKS.mig.job"
        with structlog.testing.capture_logs() as logs:
            async with running(app):
                assert [await f.result(10) for f in futs] == [1, 2, 3]
        with pytest.raises(NotFoundError):
            await app.js.consumer_info(TASKS_STREAM, WORKER_DURABLE)
        assert (await app.js.consumer_info(TASKS_STREAM, lane_durable("mig.job"))).num_pending == 0
        (removed,) = [e for e in logs if e["event"] == "worker.legacy_durable_removed"]
        assert (removed["pending"], removed["unacked"]) == (2, 1)
    finally:
        await app.close()


async def test_a_consumer_of_another_application_with_that_name_is_left_alone(
    nats_url: str,
) -> None:
    app = App("upgrade2", nats_url=nats_url)
    await app.connect()
    try:

        @app.task(name="mig2.job")
        async def job() -> str:
            return "ok"

        await app.js.add_consumer(
            TASKS_STREAM,
            ConsumerConfig(
                durable_name=WORKER_DURABLE,
                ack_policy=AckPolicy.EXPLICIT,
                filter_subject="TASKS_TARGET.someone-else.>",
            ),
        )
        async with running(app):
            assert await (await job.delay()).result(10) == "ok"
        info = await app.js.consumer_info(TASKS_STREAM, WORKER_DURABLE)
        assert info.config.filter_subject == "TASKS_TARGET.someone-else.>"
    finally:
        await app.close()
