"""Periodic schedules against a real server: fired by the server, once per tick, durable."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from ebind.app import App
from ebind.context import Context
from ebind.embed import Node
from ebind.errors import InvalidArguments
from ebind.periodic import SCHEDULES_PREFIX
from ebind.streams import TASKS_STREAM
from ebind.worker import Worker


def _make_app(url: str, runs: list[str]) -> App:
    app = App("periodic", nats_url=url)

    @app.task(name="tick")
    async def tick(ctx: Context, label: str) -> None:
        runs.append(ctx.task_id)

    return app


@contextlib.asynccontextmanager
async def _workers(app: App, n: int) -> AsyncIterator[list[Worker]]:
    workers = [app.worker(scheduler=False, ack_wait=2.0, shutdown_grace=2.0) for _ in range(n)]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield workers
    finally:
        for w in workers:
            await w.stop()
        for t in tasks:
            try:
                await asyncio.wait_for(t, 10)
            except BaseException:
                t.cancel()
                raise


async def _produced(app: App) -> int:
    """Messages the server produced for the schedule: last_seq minus the schedule itself."""
    info = await app.js.stream_info(TASKS_STREAM)
    return int(info.state.last_seq) - 1


async def test_every_second_runs_each_tick_exactly_once_with_two_workers(nats_url: str) -> None:
    runs: list[str] = []
    app = _make_app(nats_url, runs)
    async with app, _workers(app, 2):
        info = await app.schedule("tick-1s", "tick", ["x"], every=timedelta(seconds=1))
        assert info.every == timedelta(seconds=1)
        await asyncio.sleep(4.3)
        removed = await app.unschedule("tick-1s")
        produced = await _produced(app)
        await asyncio.sleep(1.5)  # no firing after the removal; the last one finishes
        assert await _produced(app) == produced
    assert removed
    assert 3 <= len(runs) <= 5
    assert len(runs) == produced
    assert len(set(runs)) == len(runs), runs  # one id per firing
    assert all(r.startswith("tick-1s-") for r in runs)


async def test_schedule_survives_a_node_kill_and_restart(nats_node: Node) -> None:
    runs: list[str] = []
    app = _make_app(nats_node.client_url, runs)
    async with app:
        await app.schedule("durable", "tick", ["x"], every=1)
    nats_node.kill()
    nats_node.restart()
    app = _make_app(nats_node.client_url, runs)
    async with app:
        assert [s.name for s in await app.schedules()] == ["durable"]
        async with _workers(app, 1):
            for _ in range(100):
                if len(runs) >= 2:
                    break
                await asyncio.sleep(0.1)
        await app.unschedule("durable")
    assert len(runs) >= 2


async def test_ls_shows_schedules_and_rm_removes_them(nats_url: str) -> None:
    app = _make_app(nats_url, [])
    async with app:
        await app.schedule("b-cron", "tick", ["x"], cron="*/5 * * * *", tz="Europe/Berlin")
        await app.schedule("a-every", "tick", kwargs={"label": "y"}, every=timedelta(minutes=90))
        # re-creating a name replaces it
        await app.schedule("a-every", "tick", ["z"], every=timedelta(hours=2))
        listed = await app.list_schedules()
        assert [s.name for s in listed] == ["a-every", "b-cron"]
        a, b = listed
        assert a.every == timedelta(hours=2) and a.cron is None and a.task == "tick"
        assert b.cron == "*/5 * * * *" and b.tz == "Europe/Berlin"
        assert a.next_run is not None and b.next_run is not None
        assert await app.unschedule("b-cron") is True
        assert await app.unschedule("b-cron") is False
        assert [s.name for s in await app.schedules()] == ["a-every"]
        info = await app.js.stream_info(TASKS_STREAM, subjects_filter=f"{SCHEDULES_PREFIX}.>")
        assert set(info.state.subjects or {}) == {f"{SCHEDULES_PREFIX}.a-every"}


async def test_bad_arguments_publish_nothing(nats_url: str) -> None:
    app = _make_app(nats_url, [])
    async with app:
        with pytest.raises(InvalidArguments, match="label"):
            await app.schedule("bad", "tick", [1], every=5)
        with pytest.raises(InvalidArguments, match="exactly one of every= or cron="):
            await app.schedule("bad", "tick", ["x"])
        assert await app.schedules() == []


async def test_connect_upgrades_an_existing_tasks_stream(nats_url: str) -> None:
    """A stream made before periodic schedules gains their subject and message TTLs."""
    import nats
    from nats.js import api

    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().add_stream(
            api.StreamConfig(
                name=TASKS_STREAM,
                subjects=["TASKS.>", "TASKS_TARGET.>", "TASKS_SCHEDULED.>"],
                retention=api.RetentionPolicy.WORK_QUEUE,
                max_age=24 * 3600.0,
                allow_msg_schedules=True,
            )
        )
    finally:
        await nc.close()
    app = _make_app(nats_url, [])
    async with app:
        await app.schedule("after-upgrade", "tick", ["x"], every=60)
        assert [s.name for s in await app.schedules()] == ["after-upgrade"]
