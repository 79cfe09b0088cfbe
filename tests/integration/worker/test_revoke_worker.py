"""Revoke on a real worker: queued, delayed, running (async and sync), across restarts."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from raw_client import store_raw
from worker_helpers import dlq_entries, running, tasks_empty, wait_for

from ebind.app import App
from ebind.context import Context
from ebind.errors import TaskFailed
from ebind.revoke import revoke_key
from ebind.streams import KV_LEASES


async def _revoked(fut: Any) -> TaskFailed:
    with pytest.raises(TaskFailed) as info:
        await fut.result(20)
    assert info.value.error.kind == "revoked"
    assert fut.id in info.value.error.message
    return info.value


async def _one_dead_letter(app: App, name: str, task_id: str) -> None:
    await wait_for(lambda: _has_dead_letter(app, name), 10)
    (entry,) = await dlq_entries(app, name)
    assert entry.error.kind == "revoked" and not entry.error.retryable
    assert entry.task is not None and entry.task.id == task_id


async def _has_dead_letter(app: App, name: str) -> bool:
    return len(await dlq_entries(app, name)) == 1


async def test_a_queued_task_revoked_before_any_worker_runs_never_runs(app: App) -> None:
    ran: list[int] = []

    @app.task(name="rv.queued")
    async def queued(x: int) -> int:
        ran.append(x)
        return x

    fut = await queued.delay(1)
    done = await fut.revoke()
    assert done.task_id == fut.id
    entry = await app.js.key_value(KV_LEASES)
    assert (await entry.get(revoke_key(fut.id))).key == revoke_key(fut.id)
    async with running(app):  # starts after the revoke: it learns it from the bucket
        await _revoked(fut)
        await _one_dead_letter(app, "rv.queued", fut.id)
        other = await queued.delay(2)
        assert await other.result(10) == 2
    assert ran == [2]
    await wait_for(lambda: tasks_empty(app), 5)


async def test_a_countdown_task_revoked_while_waiting_never_runs(app: App) -> None:
    ran: list[int] = []

    @app.task(name="rv.countdown")
    async def later(x: int) -> int:
        ran.append(x)
        return x

    async with running(app):
        fut = await later.apply_async((1,), countdown=1.0)
        await app.revoke(fut.id)
        await _revoked(fut)
        await _one_dead_letter(app, "rv.countdown", fut.id)
    assert ran == []


async def test_an_eta_task_revoked_before_its_time_never_runs(app: App) -> None:
    ran: list[int] = []

    @app.task(name="rv.eta")
    async def at_time(x: int) -> int:
        ran.append(x)
        return x

    async with running(app):
        when = datetime.now(UTC) + timedelta(seconds=1.5)
        fut = await at_time.apply_async((1,), eta=when)
        await app.revoke(fut.id)
        await _revoked(fut)
        await _one_dead_letter(app, "rv.eta", fut.id)
        assert datetime.now(UTC) >= when  # answered when it came due, not before
    assert ran == []


async def test_a_running_async_task_is_cancelled_and_its_waiter_told(app: App) -> None:
    started = asyncio.Event()
    cancelled: list[bool] = []

    @app.task(name="rv.async")
    async def slow() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async with running(app) as worker:
        fut = await slow.delay()
        await asyncio.wait_for(started.wait(), 10)
        began = time.monotonic()
        await app.revoke(fut.id)
        await _revoked(fut)
        assert time.monotonic() - began < 5
        await _one_dead_letter(app, "rv.async", fut.id)
        assert worker.claims  # the worker itself keeps running
    assert cancelled == [True]
    await wait_for(lambda: tasks_empty(app), 5)


async def test_a_running_sync_task_sees_the_flag_on_its_context(app: App) -> None:
    started = threading.Event()
    seen: list[bool] = []

    @app.task(name="rv.sync")
    def spin(ctx: Context) -> str:
        started.set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if ctx.revoked:
                seen.append(True)
            ctx.check_revoked()
            time.sleep(0.02)
        return "not revoked"

    async with running(app):
        fut = await spin.delay()
        await asyncio.to_thread(started.wait, 10)
        await app.revoke(fut.id)
        await _revoked(fut)
        await _one_dead_letter(app, "rv.sync", fut.id)
    assert seen == [True]


async def test_a_delayed_task_revoked_while_no_worker_runs_stays_revoked(app: App) -> None:
    ran: list[int] = []

    @app.task(name="rv.restart")
    async def later(x: int) -> int:
        ran.append(x)
        return x

    async with running(app):
        assert await (await later.apply_async((0,))).result(10) == 0
    # No worker now: the revocation reaches only the bucket. The delayed message fires
    # after the next worker started, so its stream time is newer than that worker.
    fut = await later.apply_async((1,), countdown=2.0)
    await app.revoke(fut.id)
    async with running(app):
        await _revoked(fut)
        await _one_dead_letter(app, "rv.restart", fut.id)
    assert ran == [0]


async def test_revoking_an_unknown_or_finished_id_is_harmless(app: App) -> None:
    @app.task(name="rv.done")
    async def done(x: int) -> int:
        return x

    async with running(app):
        fut = await done.delay(5)
        assert await fut.result(10) == 5
        finished = await app.revoke(fut.id)
        unknown = await app.revoke("no-such-task")
        assert finished.task_id == fut.id and unknown.task_id == "no-such-task"
        assert await (await done.delay(6)).result(10) == 6
    assert await dlq_entries(app, "rv.done") == []


async def test_a_revocation_seen_by_one_worker_holds_for_the_next(app: App) -> None:
    ran: list[int] = []

    @app.task(name="rv.next")
    async def later(x: int) -> int:
        ran.append(x)
        return x

    fut = await later.apply_async((1,), countdown=2.0)
    async with running(app) as first:
        await app.revoke(fut.id)
        await wait_for(lambda: fut.id in _known(first), 5)
    # The first worker stopped before the task was due; a new one runs it (or not).
    async with running(app):
        await _revoked(fut)
        await _one_dead_letter(app, "rv.next", fut.id)
    assert ran == []


def _known(worker: Any) -> frozenset[str]:
    revocations = worker._runner.revocations
    return frozenset() if revocations is None else revocations.ids


async def test_a_revocation_record_posing_as_end_of_listing_hides_no_later_revocation(
    app: App, nats_url: str
) -> None:
    # Whoever may revoke can store any header block with a revocation. One whose last line
    # is left open swallows the header the server adds first when it returns the record,
    # and reads as the server's "not found": a starting worker's listing of revocations
    # must not end there, or a countdown task revoked after it fires and runs.
    ran: list[int] = []

    @app.task(name="rv.hidden")
    async def later(x: int) -> int:
        ran.append(x)
        return x

    hostile = f"$KV.{KV_LEASES}.{revoke_key('posing-as-a-status')}".encode()
    await store_raw(nats_url, hostile, b"NATS/1.0\r\nStatus: 404\r\nX\r\n", b"{}")
    fut = await later.apply_async((1,), countdown=2.0)
    await app.revoke(fut.id)
    async with running(app):
        await _revoked(fut)
        await _one_dead_letter(app, "rv.hidden", fut.id)
    assert ran == []
