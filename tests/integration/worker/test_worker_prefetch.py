"""Deliveries held ahead of free slots: short tasks only, bounded, run in the grace at stop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from click.testing import CliRunner
from worker_helpers import running, wait_for

from ebind.app import App
from ebind.cli import main
from ebind.retry import RetryPolicy
from ebind.worker import Worker


class _Watch:
    """Most handlers running at once, and most deliveries waiting for a slot, as seen."""

    def __init__(self) -> None:
        self.running = 0
        self.most_running = 0
        self.most_queued = 0

    def enter(self, w: Worker | None) -> None:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        if w is not None:
            self.most_queued = max(self.most_queued, w.queued)

    def leave(self) -> None:
        self.running -= 1


async def _sample(w: Worker, watch: _Watch, stop: asyncio.Event) -> None:
    while not stop.is_set():
        watch.most_queued = max(watch.most_queued, w.queued)
        await asyncio.sleep(0.001)


async def _run_batch(app: App, watch: _Watch, n: int, seconds: float, **options: Any) -> Worker:
    worker: list[Worker] = []

    @app.task(name="pf.work")
    async def work(i: int) -> int:
        watch.enter(worker[0] if worker else None)
        try:
            await asyncio.sleep(seconds)
        finally:
            watch.leave()
        return i

    async with running(app, **options) as w:
        worker.append(w)
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample(w, watch, stop))
        try:
            futs = await work.map(range(n))
            assert [await f.result(60) for f in futs] == list(range(n))
        finally:
            stop.set()
            await sampler
    return w


async def test_short_tasks_are_held_ahead_and_no_more_run_than_the_concurrency(app: App) -> None:
    watch = _Watch()
    await _run_batch(app, watch, 600, 0.001, concurrency=4, prefetch=4)
    assert watch.most_running <= 4
    assert watch.most_queued > 0, "short tasks were never held ahead of a free slot"
    assert watch.most_queued <= 4 * 3  # (prefetch - 1) rounds of the slots at most


async def test_long_tasks_are_not_held_ahead(app: App) -> None:
    # A slot time of 0.25 s starts less than one delivery per 10 ms: none is held ahead,
    # so an idle neighbour would get every message this worker is not running.
    watch = _Watch()
    await _run_batch(app, watch, 12, 0.25, concurrency=2, prefetch=8)
    assert watch.most_running <= 2
    assert watch.most_queued == 0


async def test_prefetch_one_holds_only_what_runs(app: App) -> None:
    watch = _Watch()
    await _run_batch(app, watch, 400, 0.001, concurrency=4, prefetch=1)
    assert watch.most_running <= 4
    assert watch.most_queued == 0


async def test_held_deliveries_run_in_the_grace_at_stop_once_each(app: App) -> None:
    # Handing them back would cost each an attempt (a one-attempt task would end as
    # worker_lost) and leave a task targeted at this worker to nobody; they are short by
    # construction, so the grace runs them.
    ran: list[int] = []
    gate = asyncio.Event()

    @app.task(name="pf.quick")
    async def quick() -> None:
        return None

    @app.task(name="pf.slow", retry=RetryPolicy.none())
    async def slow(i: int) -> int:
        ran.append(i)
        if i == 0:
            await gate.wait()
        return i

    a = Worker(app, worker_id="A", concurrency=1, prefetch=4, scheduler=False, ack_wait=5.0)
    a_run = asyncio.create_task(a.run())
    try:
        await wait_for(lambda: a.is_consuming, 10)
        for f in await quick.starmap([()] * 30):  # a short slot time: three held ahead
            await f.result(20)
        futs = await slow.map(range(4))
        await wait_for(lambda: a.queued == 3 and ran == [0], 10)
        await a.stop()
        await asyncio.sleep(0.2)
        assert not a_run.done() and ran == [0]
        gate.set()
        await asyncio.wait_for(a_run, 15)
        assert [await f.result(5) for f in futs] == [0, 1, 2, 3]
    finally:
        gate.set()
        if not a_run.done():
            a_run.cancel()
    assert sorted(ran) == [0, 1, 2, 3], ran  # each ran once, all on the stopping worker


def test_worker_help_shows_prefetch_and_refuses_zero() -> None:
    result = CliRunner().invoke(main, ["worker", "--help"])
    assert result.exit_code == 0, result.output
    assert "--prefetch" in result.output
    result = CliRunner().invoke(main, ["worker", "-A", "cli_app:app", "--prefetch", "0"])
    assert result.exit_code != 0
    assert "--prefetch" in result.output and "0" in result.output


def test_worker_refuses_a_prefetch_below_one(app: App) -> None:
    for bad in (0, -2):
        try:
            Worker(app, prefetch=bad)
        except ValueError as exc:
            assert "prefetch must be a whole number >= 1" in str(exc)
        else:
            raise AssertionError(f"prefetch={bad} was accepted")


async def test_held_deliveries_stay_within_prefetch_per_slot_while_responses_are_slow(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "At most --prefetch per slot in all (running, waiting or being answered)": with the
    # results stream slow to confirm, finished tasks waiting for their store are still held
    # deliveries (a neighbour cannot take them), so the total stays within c * prefetch.
    from ebind.worker.runner import AttemptRunner

    original = AttemptRunner._respond

    async def slow_respond(self: Any, env: Any, **kw: Any) -> bool:
        await asyncio.sleep(0.3)  # EBIND_RESP slow to confirm (a leader election, a far node)
        return await original(self, env, **kw)

    monkeypatch.setattr(AttemptRunner, "_respond", slow_respond)
    most_held = 0

    @app.task(name="pf.fast")
    async def fast(i: int) -> int:
        return i

    async with running(app, concurrency=2, prefetch=2) as w:
        stop = asyncio.Event()

        async def sample() -> None:
            nonlocal most_held
            while not stop.is_set():
                most_held = max(most_held, w.held_count)
                await asyncio.sleep(0.001)

        sampler = asyncio.create_task(sample())
        try:
            futs = await fast.map(range(60))
            assert [await f.result(30) for f in futs] == list(range(60))
        finally:
            stop.set()
            await sampler
    assert most_held <= 2 * 2, f"held {most_held} deliveries with concurrency 2, prefetch 2"
