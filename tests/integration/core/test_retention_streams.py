"""Retention on a real server: stream limits from the App, operator values kept, no needless
updates, typed errors for an expired result and a full stream."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import nats.js.errors
import pytest
from core_helpers import bound_tasks_stream
from nats.js import api
from structlog.testing import capture_logs

import ebind.streams
from ebind import App, Retention
from ebind.errors import ResultExpired, StreamFull
from ebind.streams import DAG_EVENTS_STREAM, DLQ_STREAM, KV_LEASES, RESP_STREAM, TASKS_STREAM


@pytest.fixture(autouse=True)
def _fresh_log_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test is its own 'process' for the log-once memory of kept server settings."""
    monkeypatch.setattr(ebind.streams, "_logged_differences", set())


async def _configs(app: App) -> dict[str, Any]:
    names = (TASKS_STREAM, RESP_STREAM, DLQ_STREAM, DAG_EVENTS_STREAM)
    return {n: (await app.js.stream_info(n)).config for n in names}


async def test_streams_are_created_with_the_apps_retention(nats_url: str) -> None:
    keep = Retention(tasks=100, results=30, dead_letters=600, dag_history=60)
    async with App("ret", nats_url=nats_url, retention=keep) as app:
        got = await _configs(app)
        assert got[TASKS_STREAM].max_age == 125.0
        assert got[DAG_EVENTS_STREAM].max_age == 125.0
        assert got[RESP_STREAM].max_age == 30.0
        assert got[RESP_STREAM].subject_delete_marker_ttl == 30.0
        assert got[DLQ_STREAM].max_age == 600.0
        assert app.tasks_horizon == 100.0


async def test_a_steady_state_connect_sends_no_stream_update(nats_url: str) -> None:
    async with App("ret", nats_url=nats_url) as first:
        # an operator's own duplicate window is part of the steady state too
        info = await first.js.stream_info(TASKS_STREAM)
        await first.js.update_stream(info.config.evolve(duplicate_window=60.0))
    spy = await nats.connect(nats_url)
    seen: list[str] = []

    async def on_update(msg: Any) -> None:
        seen.append(msg.subject)

    try:
        await spy.subscribe("$JS.API.STREAM.UPDATE.>", cb=on_update)
        await spy.flush()
        for _ in range(2):
            async with App("ret", nats_url=nats_url, retention=Retention(tasks=50)):
                pass
        # the spy does see an update when one is needed (the check above is not blind)
        async with App("ret", nats_url=nats_url) as app:
            info = await app.js.stream_info(DLQ_STREAM)
            await app.js.update_stream(info.config.evolve(subjects=["DLQ.>", "OTHER.>"]))
        await spy.flush()
        await asyncio.sleep(0.2)
    finally:
        await spy.close()
    assert seen == [f"$JS.API.STREAM.UPDATE.{DLQ_STREAM}"]


async def _operator_sets_max_age(nats_url: str, max_age: float) -> None:
    async with App("ops", nats_url=nats_url) as app:
        info = await app.js.stream_info(TASKS_STREAM)
        await app.js.update_stream(info.config.evolve(max_age=max_age))


@pytest.mark.parametrize("operator_age", [90 * 86400.0, 3600.0])
async def test_an_operator_max_age_is_kept_and_logged_once(
    nats_url: str, operator_age: float
) -> None:
    await _operator_sets_max_age(nats_url, operator_age)
    with capture_logs() as logs:
        for _ in range(2):
            async with App("ret", nats_url=nats_url) as app:
                assert (await app.js.stream_info(TASKS_STREAM)).config.max_age == operator_age
                horizon = app.tasks_horizon
    kept = [e for e in logs if e["event"] == "streams.server_setting_kept"]
    assert len(kept) == 1 and kept[0]["log_level"] == "info"
    assert kept[0]["stream"] == TASKS_STREAM
    assert kept[0]["settings"]["max_age"]["server"] == operator_age
    assert not [e for e in logs if e["event"] == "streams.updated"]
    # a lower server limit pulls the horizon under it, so ebind records expiry first
    assert horizon == (7 * 86400.0 if operator_age > 7 * 86400 else operator_age / 1.25)


async def test_a_missing_flag_is_added_without_touching_the_operators_values(
    nats_url: str,
) -> None:
    async with App("ops", nats_url=nats_url) as app:
        info = await app.js.stream_info(RESP_STREAM)
        await app.js.update_stream(info.config.evolve(allow_direct=False, max_age=7200.0))
    with capture_logs() as logs:
        async with App("ret", nats_url=nats_url) as app:
            got = (await app.js.stream_info(RESP_STREAM)).config
    assert got.allow_direct is True and got.max_age == 7200.0
    updated = [e for e in logs if e["event"] == "streams.updated"]
    assert [e["changes"] for e in updated] == [["allow_direct"]]


async def test_rollup_headers_are_switched_off_on_an_older_bucket(nats_url: str) -> None:
    # Buckets made by an older release allowed rollup headers, which let the writer of one
    # key purge them all; the next connect switches them off, and a rollup is refused.
    async with App("ops", nats_url=nats_url) as app:
        info = await app.js.stream_info(f"KV_{KV_LEASES}")
        await app.js.update_stream(info.config.evolve(allow_rollup_hdrs=True))
    with capture_logs() as logs:
        async with App("ret", nats_url=nats_url) as app:
            got = (await app.js.stream_info(f"KV_{KV_LEASES}")).config
            with pytest.raises(nats.js.errors.APIError, match="rollup"):
                await app.js.publish(
                    f"$KV.{KV_LEASES}.revoked.x", b"", headers={"Nats-Rollup": "all"}
                )
    assert got.allow_rollup_hdrs is False
    updated = [e for e in logs if e["event"] == "streams.updated"]
    assert [e["changes"] for e in updated] == [["allow_rollup_hdrs"]]


async def _removed(app: App, subject: str) -> bool:
    got = await app.js.get_last_msg(RESP_STREAM, subject, direct=True)
    return bool(got.headers and got.headers.get("Nats-Marker-Reason"))


async def test_a_result_read_after_its_retention_raises_result_expired(nats_url: str) -> None:
    app = App("ret", nats_url=nats_url, retention=Retention(results=2))

    @app.task(name="ret.echo")
    async def echo(x: int) -> int:
        return x

    async with app:
        w = app.worker(scheduler=False, ack_wait=2.0)
        running = asyncio.create_task(w.run())
        try:
            fut = await echo.delay(7)
            assert await fut.result(timeout=10) == 7
        finally:
            await w.stop()
            await asyncio.wait_for(running, 10)
        subject = f"RESP.{app.client_id}.{fut.id}"
        # past the results retention the server removes the response, leaving its marker
        for _ in range(60):
            if await _removed(app, subject):
                break
            await asyncio.sleep(0.1)
        with pytest.raises(ResultExpired, match="outlived the results retention") as caught:
            await app.future(fut.id).result(timeout=5)
        assert caught.value.task_id == fut.id


async def test_a_task_refused_by_a_full_stream_raises_stream_full(nats_url: str) -> None:
    # An operator provisions EBIND_TASKS with a bound and discard new (no schedules then).
    await bound_tasks_stream(nats_url, max_msgs=4)
    app = App("ret", nats_url=nats_url)

    @app.task(name="ret.job")
    async def job(x: int) -> int:
        return x

    async with app:
        await job.delay(1)
        await job.delay(2)
        # A batch publishes all before checking: it names what was stored, then raises.
        with pytest.raises(StreamFull, match="refused by EBIND_TASKS") as batch:
            await job.map(range(5))
        accepted = batch.value.accepted
        assert len(accepted) == 2 and batch.value.task_id not in {f.id for f in accepted}
        assert "2 of 5 tasks were accepted" in "".join(batch.value.__notes__)
        with pytest.raises(StreamFull, match="refused by EBIND_TASKS") as caught:
            await job.delay(3)
        assert caught.value.stream == TASKS_STREAM and caught.value.task_id
        assert (await app.js.stream_info(TASKS_STREAM)).state.messages == 4


async def test_a_full_response_stream_is_reported_to_the_worker_not_lost(nats_url: str) -> None:
    app = App("ret", nats_url=nats_url)
    async with app:
        info = await app.js.stream_info(RESP_STREAM)
        await app.js.update_stream(info.config.evolve(max_msgs=1, discard=api.DiscardPolicy.NEW))
        await app.publish_response("RESP.x.t1", b'{"task_id":"t1"}')
        with pytest.raises(StreamFull, match="refused by EBIND_RESP"):
            await app.publish_response("RESP.x.t2", b'{"task_id":"t2"}')


async def test_an_operator_bound_that_would_drop_tasks_silently_is_warned_about_once(
    nats_url: str,
) -> None:
    async with App("ret", nats_url=nats_url) as app:
        info = await app.js.stream_info(TASKS_STREAM)
        await app.js.update_stream(info.config.evolve(max_msgs=1000))  # discard stays "old"
    with capture_logs() as logs:
        for _ in range(2):
            async with App("ret", nats_url=nats_url) as app:
                assert (await app.js.stream_info(TASKS_STREAM)).config.max_msgs == 1000
    warned = [e for e in logs if e["event"] == "streams.silent_discard_configured"]
    assert len(warned) == 1 and warned[0]["log_level"] == "warning"
    assert warned[0]["stream"] == TASKS_STREAM and warned[0]["limits"] == {"max_msgs": 1000}
