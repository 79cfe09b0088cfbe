"""History collector, live-index pruning and retry writes against MemStore."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from ebind.errors import InvalidArguments, StaleRevision
from ebind.workflow import CaptureEnqueuer, MemBus, Workflow, rerun
from ebind.workflow.history import collect, live_metas, prune_live
from ebind.workflow.lifecycle import LIVE_GRACE, LiveEntry, encode_live
from ebind.workflow.store_mem import MemStore
from ebind.workflow.types import DAGMeta, DAGStatus, StepRecord, StepStatus

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


async def put_dag(
    store: MemStore, dag_id: str, status: DAGStatus, finished: datetime | None = None
) -> None:
    meta = DAGMeta(id=dag_id, status=status, created_at=ago(10**6), finished_at=finished)
    await store.put_meta(dag_id, meta, 0)
    rec = StepRecord(dag_id=dag_id, step_id="a", fn_name="f", status=StepStatus.DONE, run_id="r")
    await store.put_step(dag_id, "a", rec, 0)
    await store.put_result(dag_id, "a", b"1", "r")


async def test_collect_removes_old_history_only_and_indexes_unindexed_live_dags() -> None:
    store = MemStore()
    await put_dag(store, "old", DAGStatus.DONE, ago(8 * 86400))
    await put_dag(store, "old-failed", DAGStatus.FAILED, ago(8 * 86400))
    await put_dag(store, "recent", DAGStatus.DONE, ago(60))
    await put_dag(store, "live", DAGStatus.RUNNING)  # submitted before the index existed
    await put_dag(store, "indexed", DAGStatus.PAUSED)
    await store.put_live("indexed", encode_live(LiveEntry(at=ago(5))))
    seen: list[int] = []
    report = await collect(store, 7 * 86400, now=NOW, on_each=seen.append)
    assert sorted(report.removed) == ["old", "old-failed"]
    assert report.indexed == ["live"]
    assert report.examined == 5 and sum(seen) == 5
    assert sorted(m.id for m in await store.list_dags()) == ["indexed", "live", "recent"]
    assert await store.list_steps("old") == []
    assert sorted(m.id for m in await live_metas(store)) == ["indexed", "live"]


async def test_collect_dry_run_changes_nothing() -> None:
    store = MemStore()
    await put_dag(store, "old", DAGStatus.DONE, ago(8 * 86400))
    await put_dag(store, "live", DAGStatus.RUNNING)
    report = await collect(store, 86400, now=NOW, dry_run=True)
    assert report.removed == ["old"] and report.indexed == []
    assert len(await store.list_dags()) == 2
    assert await store.list_live() == []


async def test_collect_keeps_a_dag_retried_after_the_listing() -> None:
    store = MemStore()
    await put_dag(store, "old", DAGStatus.FAILED, ago(8 * 86400))
    listed = await store.list_dags()
    meta, rev = await store.get_meta("old")
    back = DAGMeta(id="old", status=DAGStatus.RUNNING, created_at=meta.created_at)
    await store.put_meta("old", back, rev)
    report = await collect(store, 86400, now=NOW, metas=listed)
    assert report.removed == []
    assert (await store.get_meta("old"))[0].status is DAGStatus.RUNNING


async def test_prune_removes_finished_and_long_missing_entries_only() -> None:
    store = MemStore()
    await put_dag(store, "done", DAGStatus.DONE, ago(1))
    await put_dag(store, "running", DAGStatus.RUNNING)
    entries = {
        "done": LiveEntry(at=ago(30)),
        "running": LiveEntry(at=ago(10 * LIVE_GRACE)),
        "submitting": LiveEntry(at=ago(1)),
        "crashed": LiveEntry(at=ago(LIVE_GRACE + 1)),
    }
    for dag_id, entry in entries.items():
        await store.put_live(dag_id, encode_live(entry))
    await store.put_live("garbage", b"not an entry")
    removed = await prune_live(store, await store.list_live(), now=NOW)
    assert removed == 3
    assert [d for d, _ in await store.list_live()] == ["running", "submitting"]


async def test_prune_goes_on_past_a_failing_entry() -> None:
    def faults(op: str, key: str) -> None:
        if op == "get_meta" and key.startswith("bad."):
            raise TimeoutError("nats: timeout")

    store = MemStore(faults=faults)
    for dag_id in ("bad", "gone"):
        await store.put_live(dag_id, encode_live(LiveEntry(at=ago(LIVE_GRACE + 1))))
    assert await prune_live(store, await store.list_live(), now=NOW) == 1
    assert [d for d, _ in await store.list_live()] == ["bad"]


async def _failed_chain(store: MemStore) -> None:
    meta = DAGMeta(id="d", status=DAGStatus.FAILED, finished_at=ago(5), run_id="r")
    await store.put_meta("d", meta, 0)
    for rec in (
        StepRecord(dag_id="d", step_id="a", fn_name="f", status=StepStatus.FAILED, run_id="r"),
        StepRecord(
            dag_id="d", step_id="b", fn_name="f", status=StepStatus.SKIPPED, deps=["a"], run_id="r"
        ),
    ):
        await store.put_step("d", rec.step_id, rec, 0)


async def test_retry_writes_index_then_steps_then_meta() -> None:
    writes: list[str] = []
    store = MemStore(faults=lambda op, key: writes.append(f"{op} {key}") if "put" in op else None)
    await _failed_chain(store)
    writes.clear()
    assert await rerun.retry(store, "d") == ["a", "b"]
    assert [w.split()[0] for w in writes] == ["put_live", "put_step", "put_step", "put_meta"]
    meta, _ = await store.get_meta("d")
    assert meta.status is DAGStatus.RUNNING and meta.finished_at is None
    steps = {r.step_id: r for r, _ in await store.list_steps("d")}
    assert {r.status for r in steps.values()} == {StepStatus.PENDING}


async def test_retry_interrupted_before_the_meta_is_completed_by_the_next_retry() -> None:
    crash = {"on": True}

    def faults(op: str, key: str) -> None:
        if op == "put_meta" and crash["on"]:
            raise ConnectionError("process died")

    store = MemStore(faults=faults)
    crash["on"] = False
    await _failed_chain(store)
    crash["on"] = True
    with pytest.raises(ConnectionError):
        await rerun.retry(store, "d")
    # The steps were reset, the DAG still reads failed: nothing is lost, retry again.
    assert (await store.get_meta("d"))[0].status is DAGStatus.FAILED
    crash["on"] = False
    assert await rerun.retry(store, "d") == ["a", "b"]
    assert (await store.get_meta("d"))[0].status is DAGStatus.RUNNING
    assert "d" in [d for d, _ in await store.list_live()]


async def test_retry_replans_when_a_step_moves_meanwhile() -> None:
    stale = {"armed": False, "raised": 0}

    def faults(op: str, key: str) -> None:
        if op == "put_step" and stale["armed"]:
            stale["armed"] = False
            stale["raised"] += 1
            raise StaleRevision(dag_id="d", step_id="a")

    store = MemStore(faults=faults)
    await _failed_chain(store)
    stale["armed"] = True
    assert await rerun.retry(store, "d") == ["a", "b"]
    assert stale["raised"] == 1


@pytest.mark.parametrize(
    ("options", "named"),
    [({"dag_history": -1.0}, "-1.0"), ({"history_interval": 0.0}, "0.0")],
)
def test_workflow_rejects_a_bad_history_setting(options: dict[str, float], named: str) -> None:
    with pytest.raises(InvalidArguments, match=named):
        Workflow(MemStore(), MemBus(), CaptureEnqueuer(), **options)  # type: ignore[arg-type]


def test_collect_interval_defaults_to_a_tenth_of_the_history_within_bounds() -> None:
    def interval(history: float) -> float:
        wf = Workflow(MemStore(), MemBus(), CaptureEnqueuer(), dag_history=history)
        return wf.config.collect_interval

    assert interval(7 * 86400) == 3600.0
    assert interval(3000) == 300.0
    assert interval(10) == 60.0
    wf = Workflow(MemStore(), MemBus(), CaptureEnqueuer(), dag_history=5, history_interval=0.5)
    assert (wf.config.history, wf.config.collect_interval) == (5, 0.5)


async def test_a_deleted_runs_late_completion_never_lands_in_the_resubmitted_run() -> None:
    from simworker import SimWorker, make_wf

    from ebind.workflow import DAG

    handlers = {"echo": lambda _ctx, v: v}
    wf, store, bus, enq = make_wf()
    w = SimWorker(wf, enq, handlers)
    first = DAG(id="nightly")
    first.step("s", "echo", "old run")
    await first.submit(wf)
    old_env = w.take_new()[0]
    old = msgspec.structs.replace(old_env, attempt=1, worker_id="w1")
    assert await wf.hook().on_step_started(old)  # the old run's step is running
    await wf.delete_dag("nightly", force=True, drain_timeout=0.0)
    second = DAG(id="nightly")
    second.step("s", "echo", "new run")
    await second.submit(wf)
    new = msgspec.structs.replace(w.take_new()[0], attempt=1, worker_id="w1")
    assert await wf.hook().on_step_started(new)  # same worker, same attempt number
    await w.finish(old)  # the old run's handler ends first
    rec, _ = await store.get_step("nightly", "s")
    assert rec.status is StepStatus.RUNNING
    await w.finish(new)
    assert await wf.result("nightly", "s", timeout=1) == "new run"
    await bus.close()
