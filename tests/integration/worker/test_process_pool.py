"""Sync handlers in process-pool children: results, parallelism, hard limits, replacement."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from pathlib import Path
from typing import Any

import pool_app
import pytest
from worker_helpers import running, wait_for

from ebind.app import App
from ebind.errors import TaskFailed
from ebind.task import Task
from ebind.worker import Worker
from ebind.worker.procpool import ChildBootError

APP_PATH = "pool_app:app"


@pytest.fixture
def pool_worker_app(app: App) -> App:
    """The test's connected App holding every handler of ``pool_app``."""
    for handle in {id(t): t for t in pool_app.app.tasks.values()}.values():
        app.registry.register(handle.spec)
    return app


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def _parked(app: App, name: str, tmp_path: Path) -> tuple[Any, int]:
    """Enqueue a handler that writes its child's pid and blocks; the future and that pid."""
    pid_file = tmp_path / f"{name}.pid"
    fut = await app.enqueue(name, str(pid_file))
    return fut, await _pid_from(pid_file)


async def _pid_from(path: Path) -> int:
    written: list[str] = []

    def pid_written() -> bool:
        # The child writes its pid before blocking; read it once it is there.
        written[:] = [path.read_text()] if path.exists() else []
        return bool(written and written[0])

    await wait_for(pid_written, 20)
    return int(written[0])


async def test_results_errors_and_context_round_trip_through_a_child(pool_worker_app: App) -> None:
    app = pool_worker_app
    async with running(app, pool="process", processes=1, app_path=APP_PATH) as worker:
        assert worker.procpool is not None and worker.concurrency == 1
        squared = await (await app.enqueue("pool.square", 12)).result(20)
        assert squared["value"] == 144
        assert squared["pid"] in worker.procpool.pids and squared["pid"] != os.getpid()
        fut = await app.enqueue("pool.whoami", "tagged")
        seen = await fut.result(20)
        assert seen == {
            "task_id": fut.id,
            "attempt": 1,
            "worker_id": worker.worker_id,
            "tag": "tagged",
        }
        with pytest.raises(TaskFailed) as failed:
            await (await app.enqueue("pool.fails", "boom")).result(20)
        assert failed.value.kind == "handler" and "ValueError: boom" in failed.value.error.message
        children = set(worker.procpool.pids)
    assert children and all(_gone(pid) for pid in children)


async def test_progress_in_a_child_says_it_is_not_available(pool_worker_app: App) -> None:
    app = pool_worker_app
    async with running(app, pool="process", processes=1, app_path=APP_PATH):
        fut = await app.enqueue("pool.progress")
        said = await fut.result(20)
        assert said.startswith("ProgressUnavailable: ") and "process-pool child" in said
        assert await fut.progress() is None


async def test_cpu_bound_handlers_run_in_parallel_children(pool_worker_app: App) -> None:
    app = pool_worker_app
    async with running(app, pool="process", processes=2, app_path=APP_PATH):
        futs = [await app.enqueue("pool.spin", 0.8) for _ in range(2)]
        first, second = [await f.result(30) for f in futs]
    assert first["pid"] != second["pid"]
    # Both intervals, recorded by the children themselves, overlap: they ran at once.
    assert max(first["start"], second["start"]) < min(first["end"], second["end"])


async def test_a_stuck_handler_is_killed_reported_as_timeout_and_the_pool_keeps_serving(
    pool_worker_app: App, tmp_path: Path
) -> None:
    app = pool_worker_app
    async with running(app, pool="process", processes=1, app_path=APP_PATH) as worker:
        assert worker.procpool is not None
        fut, stuck_pid = await _parked(app, "pool.stuck", tmp_path)
        with pytest.raises(TaskFailed) as failed:
            await fut.result(20)
        assert failed.value.kind == "timeout"
        assert "timeout of 1s" in failed.value.error.message
        assert _gone(stuck_pid), "the child past its limit is killed and reaped"
        later = await (await app.enqueue("pool.square", 3)).result(20)
        assert later["value"] == 9 and later["pid"] != stuck_pid
        assert worker.stuck_threads == 0 and worker.procpool.replaced == 1
        last_children = set(worker.procpool.pids)
    assert all(_gone(pid) for pid in last_children | {stuck_pid})


async def test_max_tasks_per_child_replaces_children(pool_worker_app: App) -> None:
    app = pool_worker_app
    async with running(
        app, pool="process", processes=1, max_tasks_per_child=2, app_path=APP_PATH
    ) as worker:
        pids = [(await (await app.enqueue("pool.square", i)).result(20))["pid"] for i in range(4)]
        assert worker.procpool is not None
        await wait_for(lambda: _gone(pids[0]), 10)
        current = set(worker.procpool.pids)
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[0] != pids[2]
    assert all(_gone(pid) for pid in current | set(pids))


async def test_a_child_killed_from_outside_is_reported_and_replaced(
    pool_worker_app: App, tmp_path: Path
) -> None:
    import signal

    app = pool_worker_app
    async with running(app, pool="process", processes=1, app_path=APP_PATH) as worker:
        fut, victim = await _parked(app, "pool.wait", tmp_path)
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(TaskFailed) as failed:
            await fut.result(20)
        assert failed.value.kind == "worker_lost"
        assert "killed by signal SIGKILL" in failed.value.error.message
        assert "pool.wait" in failed.value.error.message
        with pytest.raises(TaskFailed) as exited:
            await (await app.enqueue("pool.exit", 3)).result(20)
        assert exited.value.kind == "worker_lost" and "exited with code 3" in str(exited.value)
        after = await (await app.enqueue("pool.square", 5)).result(20)
        assert after["value"] == 25 and after["pid"] != victim
        assert worker.procpool is not None and worker.procpool.replaced == 2


async def test_a_thread_pool_worker_runs_only_opted_in_tasks_in_children(
    pool_worker_app: App,
) -> None:
    app = pool_worker_app
    async with running(app, app_path=APP_PATH) as worker:
        pool = worker.procpool
        assert pool is not None and pool.pids == frozenset()  # started on first use
        assert await (await app.enqueue("pool.in_thread")).result(20) == os.getpid()
        child = await (await app.enqueue("pool.opted_in")).result(20)
        assert child != os.getpid() and pool.pids == {child}
    assert _gone(child)


async def test_a_worker_whose_children_cannot_import_the_app_fails_at_startup(
    pool_worker_app: App,
) -> None:
    worker = Worker(pool_worker_app, pool="process", processes=1, app_path="no_such_module_xyz:app")
    with pytest.raises(ChildBootError, match="cannot import module 'no_such_module_xyz'"):
        await asyncio.wait_for(worker.run(), 60)
    assert worker.procpool is None and not worker.is_running
    assert [p for p in multiprocessing.active_children() if p.name == "ebind-pool-child"] == []


async def test_a_call_still_running_past_the_shutdown_grace_loses_its_child(
    pool_worker_app: App, tmp_path: Path
) -> None:
    app = pool_worker_app
    async with running(
        app, pool="process", processes=1, app_path=APP_PATH, shutdown_grace=0.5
    ) as worker:
        fut, busy = await _parked(app, "pool.wait", tmp_path)
        pool = worker.procpool
    assert pool is not None and _gone(busy) and pool.pids == frozenset()
    assert not fut.done()  # handed back to the stream, not failed


async def test_a_call_past_the_tasks_deadline_is_killed_and_reported_as_deadline(
    pool_worker_app: App, tmp_path: Path
) -> None:
    app = pool_worker_app
    wait = Task(app, pool_app.wait.spec)
    async with running(app, pool="process", processes=1, app_path=APP_PATH) as worker:
        fut = await wait.apply_async([str(tmp_path / "deadline.pid")], deadline=1.5)
        busy = await _pid_from(tmp_path / "deadline.pid")
        with pytest.raises(TaskFailed) as failed:
            await fut.result(20)
        assert failed.value.kind == "deadline" and _gone(busy)
        assert worker.procpool is not None and busy not in worker.procpool.pids


async def test_a_deadline_that_passes_while_waiting_for_a_child_fails_without_a_kill(
    pool_worker_app: App, tmp_path: Path
) -> None:
    app = pool_worker_app
    square = Task(app, pool_app.square.spec)
    async with running(
        app, pool="process", processes=1, concurrency=2, app_path=APP_PATH
    ) as worker:
        stuck, busy = await _parked(app, "pool.stuck", tmp_path)  # holds the only child ~1 s
        late = await square.apply_async([4], deadline=0.3)
        with pytest.raises(TaskFailed) as failed:
            await late.result(20)
        assert failed.value.kind == "deadline"
        assert worker.procpool is not None and busy in worker.procpool.pids  # not killed for it
        with pytest.raises(TaskFailed):
            await stuck.result(20)
        assert worker.procpool is not None and worker.procpool.replaced == 1  # only the stuck one
