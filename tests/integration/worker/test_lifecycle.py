"""Claims, keepalives and graceful shutdown on real workers."""

from __future__ import annotations

import asyncio
import time

from worker_helpers import running, tasks_pending, wait_for, worker_consumer

from ebind.app import App
from ebind.context import Context
from ebind.errors import TaskTimeout


async def test_targeted_tasks_only_reach_workers_that_claim_them(app: App) -> None:
    @app.task(name="l.where")
    async def where(ctx: Context, i: int) -> str:
        await asyncio.sleep(0.005)
        return ctx.worker_id

    async with running(app, worker_id="w1", claims=["gpu"]), running(app, worker_id="w2"):
        gpu = [await where.apply_async(args=(i,), target="gpu") for i in range(10)]
        own = [await where.apply_async(args=(i,), target="worker:w2") for i in range(3)]
        bare = [await where.apply_async(args=(i,), target="w1") for i in range(3)]
        anyone = [await where.delay(i) for i in range(10)]
        assert {await f.result(20) for f in gpu} == {"w1"}
        assert {await f.result(20) for f in own} == {"w2"}
        assert {await f.result(20) for f in bare} == {"w1"}
        assert {await f.result(20) for f in anyone} <= {"w1", "w2"}


async def test_callable_claims_move_at_runtime(app: App) -> None:
    current = ["a"]

    @app.task(name="l.claimed")
    async def claimed(ctx: Context) -> str:
        return ctx.worker_id

    async with running(
        app, worker_id="mover", claims=lambda: list(current), claims_refresh=0.1
    ) as w:
        assert "a" in w.claims
        assert await (await claimed.apply_async(target="a")).result(20) == "mover"
        current[:] = ["b"]
        await wait_for(lambda: "b" in w.claims and "a" not in w.claims)
        assert await (await claimed.apply_async(target="b")).result(20) == "mover"
        orphan = await claimed.apply_async(target="a")
        try:
            await orphan.result(1.0)
            raise AssertionError("a dropped claim was still served")
        except TaskTimeout:
            pass
        async with running(app, worker_id="heir", claims=["a"]):
            assert await orphan.result(20) == "heir"


async def test_in_progress_acks_keep_long_tasks_from_redelivery(app: App) -> None:
    """Handlers running 3x ack_wait (async and sync) run once."""
    starts: list[str] = []

    @app.task(name="l.long_async")
    async def long_async() -> str:
        starts.append("async")
        await asyncio.sleep(3.2)
        return "a"

    @app.task(name="l.long_sync")
    def long_sync() -> str:
        starts.append("sync")
        time.sleep(3.2)
        return "s"

    async with running(app, ack_wait=1.0):
        f1, f2 = await long_async.delay(), await long_sync.delay()
        assert (await f1.result(20), await f2.result(20)) == ("a", "s")
        infos = [await worker_consumer(app, n) for n in ("l.long_async", "l.long_sync")]
    assert sorted(starts) == ["async", "sync"]
    assert [i.num_redelivered for i in infos] == [0, 0]


async def test_graceful_stop_lets_short_tasks_finish_and_acks_them(app: App) -> None:
    """A7a: in-flight tasks shorter than the grace complete; nothing is left in the stream."""
    started: list[int] = []
    ended: list[int] = []

    @app.task(name="l.short")
    async def short(i: int) -> int:
        started.append(i)
        await asyncio.sleep(0.5)
        ended.append(i)
        return i

    async with running(app, shutdown_grace=10.0) as w:
        futs = [await short.delay(i) for i in range(4)]
        await wait_for(lambda: len(started) == 4)
        await w.stop()
    assert sorted(ended) == [0, 1, 2, 3]
    assert [await f.result(10) for f in futs] == [0, 1, 2, 3]
    # The acks left before run() returned; the server applies them asynchronously.
    await wait_for(lambda: _drained(app), 5)


async def _drained(app: App) -> bool:
    return (
        await tasks_pending(app) == 0
        and (await worker_consumer(app, "l.short")).num_ack_pending == 0
    )


async def test_graceful_stop_naks_unfinished_tasks_for_prompt_redelivery(app: App) -> None:
    """A7b: work past the grace is handed back at once, not after ack_wait (30 s here)."""
    runs: list[str] = []

    @app.task(name="l.stuck")
    async def stuck(ctx: Context) -> str:
        runs.append(ctx.worker_id)
        if ctx.worker_id == "first":
            await asyncio.sleep(60)
        return ctx.worker_id

    async with running(app, worker_id="first", ack_wait=30.0, shutdown_grace=0.3) as w:
        fut = await stuck.delay()
        await wait_for(lambda: runs == ["first"])
        await w.stop()
    async with running(app, worker_id="second", ack_wait=30.0):
        assert await fut.result(10) == "second"
    assert runs == ["first", "second"]
