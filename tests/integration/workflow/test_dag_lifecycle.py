"""DAG life after submit on a real nats-server: live index, history removal, retry, delete."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from wf_app import app as shared_app
from wf_app import echo, slow

from ebind import NonRetryable
from ebind.app import App
from ebind.errors import DAGNotFound, DAGRunning, RetryRefused, StepNotFound
from ebind.workflow import DAG, DAGMeta, DAGStatus, StepStatus
from ebind.workflow.lifecycle import LiveEntry, encode_live
from ebind.workflow.store_nats import NatsStore


@shared_app.task(name="wfcycle.flaky")
def flaky(path: str) -> str:
    """Fails until the file at ``path`` exists, then returns its text."""
    p = Path(path)
    if not p.exists():
        raise NonRetryable(f"{p.name} is not there yet")
    return p.read_text()


async def wait_status(app: App, dag_id: str, *want: DAGStatus, limit: float = 20) -> DAGMeta:
    async with asyncio.timeout(limit):
        while True:
            meta, _ = await app.workflow.store.get_meta(dag_id)
            if meta.status in want:
                return meta
            await asyncio.sleep(0.05)


async def wait_step(app: App, dag_id: str, step_id: str, *want: StepStatus) -> int:
    """Wait until the step is in one of ``want`` with a worker's claim; returns its attempt."""
    async with asyncio.timeout(20):
        while True:
            rec, _ = await app.workflow.store.get_step(dag_id, step_id)
            if rec.status in want and (rec.status is not StepStatus.RUNNING or rec.attempt):
                return rec.attempt
            await asyncio.sleep(0.05)


async def live_ids(app: App) -> list[str]:
    return [d for d, _ in await app.workflow.store.list_live()]


# --- live index ----------------------------------------------------------------------


async def test_live_index_holds_running_dags_only(
    app: App, start_worker: Any, tmp_path: Path
) -> None:
    await start_worker("w1")
    done = DAG(id="idx-done")
    done.step("a", echo, 1)
    await done.submit(app.workflow)
    await wait_status(app, done.id, DAGStatus.DONE)
    gated = DAG(id="idx-gated")
    gated.step("a", echo, 1, wait_for_signals=["go"])
    await gated.submit(app.workflow)
    assert await live_ids(app) == ["idx-gated"]
    running = await app.workflow.list_dags(status=DAGStatus.RUNNING)
    assert [m.id for m in running] == ["idx-gated"]
    assert [m.id for m in await app.workflow.list_dags(status=DAGStatus.DONE)] == ["idx-done"]
    assert {m.id for m in await app.workflow.list_dags()} == {"idx-done", "idx-gated"}
    await app.workflow.signal(gated.id, "go")
    await wait_status(app, gated.id, DAGStatus.DONE)
    assert await live_ids(app) == []


async def test_sweep_lists_only_the_live_index_never_the_history(
    app: App, start_worker: Any
) -> None:
    store = app.workflow.store
    assert isinstance(store, NatsStore)
    await _write_history(app, 300)
    calls: list[str] = []
    original = store.list_dags

    async def spy() -> list[DAGMeta]:
        calls.append("list_dags")
        return await original()

    store.list_dags = spy  # type: ignore[method-assign]
    gated = DAG(id="sweep-live")
    gated.step("a", echo, 1, wait_for_signals=["go"])
    await gated.submit(app.workflow)
    await asyncio.sleep(1.1)  # past the freshness window of the submit's own entry
    assert await app.workflow.scheduler.sweep() == 1
    assert calls == []
    assert [m.id for m in await app.workflow.list_dags(status=DAGStatus.RUNNING)] == [gated.id]
    assert calls == []


async def test_crash_between_index_and_meta_never_hides_a_dag(app: App, start_worker: Any) -> None:
    # A submit that died after its entry, steps and meta but before dispatching.
    store = app.workflow.store
    dag = DAG(id="half-submitted")
    dag.step("a", echo, "x")
    then = datetime.now(UTC) - timedelta(seconds=5)
    await store.put_live(dag.id, encode_live(LiveEntry(at=then, run_id="r1")))
    for rec in dag.records:
        await store.put_step(dag.id, rec.step_id, msgspec.structs.replace(rec, run_id="r1"), 0)
    meta = DAGMeta(id=dag.id, status=DAGStatus.RUNNING, created_at=then, run_id="r1")
    await store.put_meta(dag.id, meta, 0)
    # And an entry whose DAG never got a meta (died right after the entry), long ago.
    await store.put_live("never-made", encode_live(LiveEntry(at=then - timedelta(hours=1))))
    await start_worker("w1")
    await wait_status(app, dag.id, DAGStatus.DONE)
    assert await app.workflow.result(dag.id, "a", timeout=5) == "x"
    async with asyncio.timeout(10):
        while True:
            if not await live_ids(app):
                break
            await asyncio.sleep(0.1)


async def test_dags_submitted_before_the_index_existed_are_indexed_and_run(
    app: App, start_worker: Any
) -> None:
    # Records as an older ebind wrote them: no live entry, no run id.
    store = app.workflow.store
    dag = DAG(id="pre-index")
    dag.step("a", echo, "old style")
    for rec in dag.records:
        await store.put_step(dag.id, rec.step_id, rec, 0)
    meta = DAGMeta(id=dag.id, status=DAGStatus.RUNNING, created_at=datetime.now(UTC))
    await store.put_meta(dag.id, meta, 0)
    await start_worker("w1")
    await wait_status(app, dag.id, DAGStatus.DONE)
    assert await app.workflow.result(dag.id, "a", timeout=5) == "old style"


# --- history -------------------------------------------------------------------------


async def _write_history(app: App, n: int) -> None:
    """``n`` finished DAGs (meta, one step, one result) written straight into the bucket."""
    js = app.js
    old = datetime.now(UTC) - timedelta(days=40)
    acks = []
    for i in range(n):
        dag_id = f"hist-{i}"
        meta = DAGMeta(
            id=dag_id, status=DAGStatus.DONE, created_at=old, finished_at=old, run_id="r0"
        )
        rec = {"dag_id": dag_id, "step_id": "a", "fn_name": "wf.echo", "status": "done"}
        rec["run_id"] = "r0"
        acks.append(
            await js.publish_async(f"$KV.ebind-dags.{dag_id}.meta", msgspec.json.encode(meta))
        )
        acks.append(
            await js.publish_async(f"$KV.ebind-dags.{dag_id}.step.a", msgspec.json.encode(rec))
        )
        acks.append(await js.publish_async(f"$KV.ebind-dags.{dag_id}.result.a.r0", b"1"))
    await asyncio.gather(*acks)


async def test_leader_removes_finished_dags_after_the_history_retention(
    app_with: Any, start_worker: Any
) -> None:
    a = await app_with(dag_history=1.0, history_interval=0.3)
    await start_worker("w1")
    finished = DAG(id="short-lived")
    finished.step("a", echo, 1)
    finished.step("b", echo, 2, wait_for_signals=["go"])
    await finished.submit(a.workflow)
    await a.workflow.signal(finished.id, "go")
    run = (await wait_status(a, finished.id, DAGStatus.DONE)).run_id
    assert await a.workflow.store.get_result(finished.id, "a", run) == b"1"
    running = DAG(id="still-running")
    running.step("a", echo, 1, wait_for_signals=["never"])
    await running.submit(a.workflow)
    # The worker's scheduler leads; run the collector of this App as the leader would.
    sched = a.workflow.scheduler
    async with asyncio.timeout(10):
        while True:
            await sched.collect()
            try:
                await a.workflow.store.get_meta(finished.id)
            except DAGNotFound:
                break
            await asyncio.sleep(0.3)
    store = a.workflow.store
    assert await store.list_steps(finished.id) == []
    assert await store.list_signals(finished.id) == []
    with pytest.raises(StepNotFound):
        await store.get_result(finished.id, "a", run)
    info = await a.js.stream_info(
        "KV_ebind-dags", subjects_filter=f"$KV.ebind-dags.{finished.id}.>"
    )
    assert not info.state.subjects  # purged: not even tombstones are left
    meta, _ = await store.get_meta(running.id)
    assert meta.status is DAGStatus.RUNNING


async def test_history_removed_by_the_scheduler_loop_itself(app_with: Any) -> None:
    a = await app_with(dag_history=1.0, history_interval=0.2)
    w = a.worker(worker_id="collector", ack_wait=2.0, shutdown_grace=1.0)
    task = asyncio.create_task(w.run())
    try:
        dag = DAG(id="auto-collected")
        dag.step("a", echo, 1)
        await dag.submit(a.workflow)
        await wait_status(a, dag.id, DAGStatus.DONE)
        async with asyncio.timeout(10):
            while True:
                try:
                    await a.workflow.store.get_meta(dag.id)
                except DAGNotFound:
                    break
                await asyncio.sleep(0.2)
    finally:
        await w.stop()
        await asyncio.wait_for(task, 5)


# --- retry ---------------------------------------------------------------------------


async def failed_chain(app: App, start_worker: Any, dag_id: str, flag: Path) -> DAGMeta:
    """A worker, and DAG ``dag_id`` (a: fails until ``flag`` exists -> b -> its echo; c) failed."""
    await start_worker("w1")
    dag = DAG(id=dag_id)
    a = dag.step("a", flaky, str(flag))
    dag.step("b", echo, a.ref())
    dag.step("c", echo, "independent")
    await dag.submit(app.workflow)
    return await wait_status(app, dag.id, DAGStatus.FAILED)


async def test_retry_reruns_failed_and_skipped_steps(
    app: App, start_worker: Any, tmp_path: Path
) -> None:
    flag = tmp_path / "ready"
    failed = await failed_chain(app, start_worker, "retry-all", flag)
    dag, b = DAG(id="retry-all"), "b"
    assert failed.finished_at is not None
    assert await live_ids(app) == []
    before, _ = await app.workflow.store.get_step(dag.id, "a")
    flag.write_text("second time lucky")
    assert await app.workflow.retry(dag.id) == ["a", "b"]
    assert dag.id in await live_ids(app)
    assert await app.workflow.result(dag.id, b, timeout=20) == "second time lucky"
    done = await wait_status(app, dag.id, DAGStatus.DONE)
    assert done.finished_at is not None and done.finished_at > failed.finished_at
    after, _ = await app.workflow.store.get_step(dag.id, "a")
    assert after.generation != before.generation
    with pytest.raises(RetryRefused, match="no failed step"):
        await app.workflow.retry(dag.id)


async def test_retry_step_reruns_one_branch(app: App, start_worker: Any, tmp_path: Path) -> None:
    await start_worker("w1")
    left, right = tmp_path / "left", tmp_path / "right"
    dag = DAG(id="retry-one")
    x = dag.step("x", flaky, str(left))
    dag.step("y", flaky, str(right))
    z = dag.step("z", echo, x.ref())
    await dag.submit(app.workflow)
    await wait_status(app, dag.id, DAGStatus.FAILED)
    with pytest.raises(RetryRefused, match="only a failed"):
        await _retry_a_done_step(app)
    left.write_text("L")
    assert await app.workflow.retry_step(dag.id, "x") == ["x", "z"]
    assert await app.workflow.result(dag.id, z, timeout=20) == "L"
    await wait_status(app, dag.id, DAGStatus.FAILED)
    y, _ = await app.workflow.store.get_step(dag.id, "y")
    assert y.status is StepStatus.FAILED
    with pytest.raises(StepNotFound):
        await app.workflow.retry_step(dag.id, "nope")


async def _retry_a_done_step(app: App) -> None:
    ok = DAG(id="retry-done")
    ok.step("a", echo, 1)
    await ok.submit(app.workflow)
    await wait_status(app, ok.id, DAGStatus.DONE)
    await app.workflow.retry_step(ok.id, "a")


async def test_retry_of_a_canceled_dag_is_refused(app: App) -> None:
    dag = DAG(id="retry-canceled")
    dag.step("a", echo, 1, wait_for_signals=["go"])
    await dag.submit(app.workflow)
    await app.workflow.cancel(dag.id)
    with pytest.raises(RetryRefused, match="canceled"):
        await app.workflow.retry(dag.id)


async def test_dlq_requeue_of_a_dag_step_reruns_it(
    app: App, start_worker: Any, tmp_path: Path
) -> None:
    flag = tmp_path / "dlq-ready"
    await failed_chain(app, start_worker, "dlq-step", flag)
    dag, b = DAG(id="dlq-step"), "b"
    letter = await _letter_of(app, dag.id)
    flag.write_text("from the DLQ")
    assert await app.dlq.requeue(letter.seq) == f"{dag.id}:a"
    assert await app.workflow.result(dag.id, b, timeout=20) == "from the DLQ"
    await wait_status(app, dag.id, DAGStatus.DONE)
    assert all(d.task is None or d.task.dag_id != dag.id for d in await app.dlq.list())


async def test_dlq_requeue_of_a_step_that_cannot_rerun_points_to_dag_retry(
    app: App, start_worker: Any, tmp_path: Path
) -> None:
    await start_worker("w1")
    dag = DAG(id="dlq-canceled")
    dag.step("a", flaky, str(tmp_path / "never"))
    dag.step("b", echo, 1, wait_for_signals=["go"])
    await dag.submit(app.workflow)
    await wait_step(app, dag.id, "a", StepStatus.FAILED)
    letter = await _letter_of(app, dag.id)
    await app.workflow.cancel(dag.id)
    with pytest.raises(RetryRefused, match=f"ebind dag retry {dag.id} --step a"):
        await app.dlq.requeue(letter.seq)
    assert (await app.dlq.show(letter.seq)).seq == letter.seq  # the entry is kept
    report = await app.dlq.requeue_all("wfcycle.flaky")
    assert (report.task_ids, report.kept) == ([], [letter.seq])
    assert (await app.dlq.show(letter.seq)).seq == letter.seq


async def test_dlq_entry_stays_until_the_rerun_is_dispatched(
    app: App, start_worker: Any, tmp_path: Path
) -> None:
    worker = await start_worker("w1")
    dag = DAG(id="dlq-no-scheduler")
    dag.step("a", flaky, str(tmp_path / "later"))
    await dag.submit(app.workflow)
    await wait_status(app, dag.id, DAGStatus.FAILED)
    letter = await _letter_of(app, dag.id)
    await worker.stop()  # no scheduler left to dispatch the rerun
    await asyncio.sleep(0.3)
    with pytest.raises(Exception, match="is kept until it is"):
        await app.dlq.requeue(letter.seq, dispatch_timeout=1.0)
    assert (await app.dlq.show(letter.seq)).seq == letter.seq
    rec, _ = await app.workflow.store.get_step(dag.id, "a")
    assert rec.status is StepStatus.PENDING


async def _letter_of(app: App, dag_id: str) -> Any:
    async with asyncio.timeout(10):
        while True:
            for letter in await app.dlq.list():
                if letter.task is not None and letter.task.dag_id == dag_id:
                    return letter
            await asyncio.sleep(0.1)


# --- delete --------------------------------------------------------------------------


async def test_delete_of_a_running_dag_needs_force(app: App) -> None:
    dag = DAG(id="keep-me")
    dag.step("a", echo, 1, wait_for_signals=["go"])
    await dag.submit(app.workflow)
    with pytest.raises(DAGRunning, match="force=True"):
        await app.workflow.delete_dag(dag.id)
    meta, _ = await app.workflow.store.get_meta(dag.id)
    assert meta.status is DAGStatus.RUNNING
    assert [r.step_id for r, _ in await app.workflow.store.list_steps(dag.id)] == ["a"]


async def test_forced_delete_drains_the_running_step(app: App, start_worker: Any) -> None:
    await start_worker("w1", concurrency=2)
    dag = DAG(id="drained")
    dag.step("s", slow, "old", 1.0)
    await dag.submit(app.workflow)
    await wait_step(app, dag.id, "s", StepStatus.RUNNING)
    meta, _ = await app.workflow.store.get_meta(dag.id)
    await app.workflow.delete_dag(dag.id, force=True)
    await asyncio.sleep(1.0)  # the step would have finished by now
    store = app.workflow.store
    with pytest.raises(DAGNotFound):
        await store.get_meta(dag.id)
    assert await store.list_steps(dag.id) == []
    with pytest.raises(StepNotFound):
        await store.get_result(dag.id, "s", meta.run_id)
    assert dag.id not in await live_ids(app)


async def test_resubmitted_id_never_reads_the_previous_runs_result(
    app: App, start_worker: Any
) -> None:
    await start_worker("w1", concurrency=4)
    first = DAG(id="nightly-2026-12-01")
    first.step("s", slow, "old run", 1.0)
    await first.submit(app.workflow)
    await wait_step(app, first.id, "s", StepStatus.RUNNING)
    # The drain gives up at once: the old step is still running when the id is reused.
    await app.workflow.delete_dag(first.id, force=True, drain_timeout=0.0)
    second = DAG(id="nightly-2026-12-01")
    second.step("s", slow, "new run", 2.0)
    await second.submit(app.workflow)
    assert await app.workflow.result(second.id, "s", timeout=20) == "new run"
    await wait_status(app, second.id, DAGStatus.DONE)
    assert await app.workflow.result(second.id, "s", timeout=5) == "new run"
