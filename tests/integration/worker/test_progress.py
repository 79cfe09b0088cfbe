"""Progress reported by async and sync handlers, read through the Future and the CLI."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from click.testing import CliRunner
from worker_helpers import running, wait_for

from ebind.app import App
from ebind.cli import main
from ebind.context import Context
from ebind.progress import PROGRESS_STREAM, Progress, ProgressUnavailable, read_progress


async def test_async_handler_progress_is_read_through_the_future(app: App) -> None:
    release = asyncio.Event()

    @app.task(name="p.async")
    async def work(ctx: Context) -> str:
        await ctx.progress(0.4, note="halfway there")
        await release.wait()
        return "done"

    async with running(app, worker_id="w-progress"):
        fut = await work.delay()

        async def reported() -> bool:
            return await fut.progress() is not None

        await wait_for(reported, 10)
        got = await fut.progress()
        assert isinstance(got, Progress)
        assert (got.task_id, got.fraction, got.note) == (fut.id, 0.4, "halfway there")
        release.set()
        assert await fut.result(10) == "done"


async def test_many_reports_are_rate_limited_and_the_last_one_wins(app: App) -> None:
    @app.task(name="p.burst")
    async def burst(ctx: Context) -> int:
        for i in range(1, 201):
            await ctx.progress(i / 200, note=f"step {i}")
        return 200

    async with running(app, worker_id="w-burst"):
        fut = await burst.delay()
        assert await fut.result(10) == 200

        async def final() -> bool:
            got = await fut.progress()
            return got is not None and got.fraction == 1.0

        await wait_for(final, 5)
    info = await app.js.stream_info(PROGRESS_STREAM)
    # 200 calls in well under a second: the first write, then at most a trailing one.
    assert info.state.last_seq <= 3
    got = await fut.progress()
    assert got is not None and got.note == "step 200"


async def test_sync_handler_progress_and_the_task_get_command(app: App, nats_url: str) -> None:
    release = threading.Event()

    @app.task(name="p.sync")
    def crunch(ctx: Context) -> str:
        ctx.progress_sync(0.75, note="crunching")
        release.wait(10)
        return "ok"

    async with running(app, worker_id="w-sync"):
        fut = await crunch.delay()

        async def reported() -> bool:
            return await read_progress(app.nc, fut.id) is not None

        await wait_for(reported, 10)
        out = await asyncio.to_thread(
            CliRunner().invoke, main, ["--nats", nats_url, "task", "get", fut.id]
        )
        assert out.exit_code == 0, out.output
        assert "75%" in out.output and "'crunching'" in out.output
        release.set()
        assert await fut.result(10) == "ok"


async def test_bad_progress_fails_the_call_and_no_record_is_written(app: App) -> None:
    @app.task(name="p.bad")
    async def bad(ctx: Context) -> str:
        try:
            await ctx.progress(1.5)
        except ValueError as exc:
            return str(exc)
        return "accepted"

    async with running(app, worker_id="w-bad"):
        fut = await bad.delay()
        assert "between 0 and 1" in await fut.result(10)
        assert await fut.progress() is None


def test_progress_outside_a_worker_says_why() -> None:
    ctx = Context(task_id="t1", name="p.direct")
    with pytest.raises(ProgressUnavailable, match="not a direct call"):
        ctx.progress_sync(0.5)


async def test_task_get_without_progress_says_so(app: App, nats_url: str) -> None:
    out = await asyncio.to_thread(
        CliRunner().invoke, main, ["--nats", nats_url, "task", "get", "no-such-task"]
    )
    assert out.exit_code == 0, out.output
    assert "no progress reported" in out.output
    as_json = await asyncio.to_thread(
        CliRunner().invoke, main, ["--nats", nats_url, "task", "get", "no-such-task", "--json"]
    )
    assert json.loads(as_json.output) == {"task_id": "no-such-task", "progress": None}
    bad = await asyncio.to_thread(
        CliRunner().invoke, main, ["--nats", nats_url, "task", "get", "bad.id"]
    )
    assert bad.exit_code != 0 and "task id" in bad.output


async def test_a_running_dag_step_shows_its_progress_in_dag_get_and_tree(
    app: App, nats_url: str
) -> None:
    from ebind.cli.dag_progress import step_task_id
    from ebind.workflow.dag import DAG

    release = asyncio.Event()

    @app.task(name="p.step")
    async def step(ctx: Context) -> int:
        await ctx.progress(0.3, note="loading rows")
        await release.wait()
        return 1

    async with running(app, worker_id="w-dag", scheduler=True):
        dag = DAG()
        dag.step("load", step)
        await dag.submit(app.workflow)

        async def reported() -> bool:
            return await read_progress(app.nc, step_task_id(dag.id, "load"), "") is not None

        await wait_for(reported, 15)
        for command in ("get", "tree"):
            out = await asyncio.to_thread(
                CliRunner().invoke, main, ["--nats", nats_url, "dag", command, dag.id]
            )
            assert out.exit_code == 0, out.output
            assert "progress:" in out.output, out.output
            assert "load  30% 'loading rows'" in out.output, out.output
        release.set()
        assert await app.workflow.result(dag.id, "load", timeout=15) == 1
