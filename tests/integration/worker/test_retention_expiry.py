"""Nothing vanishes without a record: tasks past their horizon are dead-lettered as expired.

Short horizons (seconds) on a real server: a task a worker receives too late, a task no
worker ever takes (the leased expirer), and an unlimited retry loop that meets the horizon.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from worker_helpers import dlq_entries, running

from ebind import App, Retention, RetryPolicy
from ebind.errors import TaskFailed
from ebind.expirer import Expirer
from ebind.schedule import schedule_headers
from ebind.streams import TASKS_STREAM


def _app(nats_url: str, tasks: float) -> App:
    return App("ret", nats_url=nats_url, retention=Retention(tasks=tasks))


async def test_a_task_received_past_its_horizon_is_dead_lettered_not_run(nats_url: str) -> None:
    app = _app(nats_url, 2)
    ran: list[int] = []

    @app.task(name="ret.late")
    async def late(x: int) -> int:
        ran.append(x)
        return x

    async with app:
        # the server keeps messages longer than the horizon, so only ebind's check can act
        info = await app.js.stream_info(TASKS_STREAM)
        await app.js.update_stream(info.config.evolve(max_age=60.0))
        fut = await late.delay(1)
        await asyncio.sleep(2.3)  # no worker during the horizon
        async with running(app):
            with pytest.raises(TaskFailed) as caught:
                await fut.result(timeout=10)
        assert caught.value.kind == "expired"
        assert "could not run before its retention horizon of 2s" in caught.value.error.message
        assert ran == []
        entries = await dlq_entries(app, "ret.late")
        assert [e.error.kind for e in entries] == ["expired"]
        assert entries[0].task is not None and entries[0].task.id == fut.id


async def test_a_task_nobody_takes_is_expired_by_the_scheduler_worker(nats_url: str) -> None:
    app = _app(nats_url, 2)

    @app.task(name="ret.gpu")
    async def gpu(x: int) -> int:
        return x

    async with app:
        fut = await gpu.apply_async([5], target="a-claim-nobody-holds")
        await app.schedule("hourly", gpu, [1], every=3600)
        # a countdown far ahead (published as a producer with a longer horizon would)
        far = datetime.now(UTC) + timedelta(hours=1)
        await app.js.publish(
            "TASKS_SCHEDULED.later", b"{}", headers=schedule_headers(far, "TASKS.ret.gpu")
        )
        async with running(app, scheduler=True):
            with pytest.raises(TaskFailed) as caught:
                await fut.result(timeout=15)
            assert caught.value.kind == "expired"
            await asyncio.sleep(4.5)  # past the server's max_age: schedules must survive it
        entries = await dlq_entries(app, "ret.gpu")
        assert len(entries) == 1 and entries[0].error.kind == "expired"
        assert entries[0].subject.startswith("TASKS_TARGET.")
        assert entries[0].raw  # the exact bytes that were queued
        info = await app.js.stream_info(TASKS_STREAM, subjects_filter=">")
        subjects = set((info.state.subjects or {}).keys())
        assert subjects == {"TASKS_SCHEDULES.hourly", "TASKS_SCHEDULED.later"}
        assert [s.name for s in await app.schedules()] == ["hourly"]


async def test_two_expirers_store_one_dead_letter_per_message(nats_url: str) -> None:
    app = _app(nats_url, 1)
    async with app:
        fut = await app.enqueue("ret.unknown_name", 1)
        await asyncio.sleep(1.1)
        # two leaders at once (a lease handover) both find the message: one record is kept
        counts = await asyncio.gather(Expirer(app).sweep(), Expirer(app).sweep())
        assert 1 <= sum(counts) <= 2
        assert await Expirer(app).sweep() == 0  # recorded and deleted
        with pytest.raises(TaskFailed) as caught:
            await fut.result(timeout=5)
        assert caught.value.kind == "expired"
        assert len(await dlq_entries(app, "ret.unknown_name")) == 1


async def test_unlimited_retries_end_at_the_horizon(nats_url: str) -> None:
    app = _app(nats_url, 3)
    attempts: list[int] = []

    @app.task(
        name="ret.flaky",
        retry=RetryPolicy(initial_interval=0.4, backoff_coefficient=1.0, maximum_attempts=0),
    )
    async def flaky() -> None:
        attempts.append(1)
        raise RuntimeError("still down")

    async with app:
        fut = await flaky.delay()
        async with running(app):
            with pytest.raises(TaskFailed) as caught:
                await fut.result(timeout=20)
        assert caught.value.kind == "expired"
        message = caught.value.error.message
        assert "next retry would start after its retention horizon of 3s" in message
        assert "the last attempt failed with handler: RuntimeError: still down" in message
        assert 3 <= len(attempts) <= 9
        entries = await dlq_entries(app, "ret.flaky")
        assert [e.error.kind for e in entries] == ["expired"]
        assert entries[0].final_attempt == len(attempts)


async def test_a_message_a_worker_holds_is_left_to_it_past_the_horizon(nats_url: str) -> None:
    from nats.js.api import ConsumerConfig

    app = _app(nats_url, 1)  # horizon 1 s, grace 2 s: a held message gets 1 s more
    async with app:
        info = await app.js.stream_info(TASKS_STREAM)
        await app.js.update_stream(info.config.evolve(max_age=60.0))  # no race with the server
        fut = await app.enqueue("ret.long_running", 1)
        # a worker's pull: the message is delivered and held (not acked)
        sub = await app.js.pull_subscribe(
            "TASKS.>", durable="held", config=ConsumerConfig(ack_wait=30)
        )
        held = await sub.fetch(1, timeout=5)
        assert len(held) == 1
        await asyncio.sleep(1.2)  # past the horizon, within the held allowance
        assert await Expirer(app).sweep() == 0
        await asyncio.sleep(1.0)  # past the allowance too: its worker never reported
        assert await Expirer(app).sweep() == 1
        with pytest.raises(TaskFailed) as caught:
            await fut.result(timeout=5)
        assert caught.value.kind == "expired"
