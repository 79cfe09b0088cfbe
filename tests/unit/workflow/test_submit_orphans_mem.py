"""Submit after a submit of the same id died between its step records and its meta (MemStore)."""

from __future__ import annotations

import asyncio

import pytest
from simworker import SimCtx, SimWorker, make_wf, running

from ebind.errors import StaleRevision
from ebind.workflow import DAG, DAGStatus, Workflow
from ebind.workflow import dag as dag_module
from ebind.workflow.store_mem import MemStore

SMALL, LARGE = "0" * 16, "f" * 16


class _Died(Exception):
    """Stands for the producer dying at the point submit reaches."""


def _add(ctx: SimCtx, a: int, b: int) -> int:
    return a + b


def _diamond(dag_id: str) -> DAG:
    dag = DAG(id=dag_id)
    a = dag.step("a", "add", 1, 2).ref()
    dag.step("d", "add", dag.step("b", "add", a, 10).ref(), dag.step("c", "add", a, 100).ref())
    return dag


async def _die_before_meta(
    wf: Workflow, store: MemStore, dag_id: str, run: str, lost: set[str], mp: pytest.MonkeyPatch
) -> None:
    """Submit under ``run`` and die before the meta; the ``lost`` steps' writes never land."""
    put_step = store.put_step

    async def flaky(d: str, step_id: str, rec: object, rev: int) -> int:
        if step_id in lost:
            raise _Died(step_id)
        return await put_step(d, step_id, rec, rev)  # type: ignore[arg-type]

    def die(name: str) -> None:
        raise _Died(name)

    with mp.context() as m:
        m.setattr(dag_module, "new_run_id", lambda: run)
        m.setattr(dag_module, "crashpoint", die)
        m.setattr(store, "put_step", flaky)
        with pytest.raises(_Died):
            await _diamond(dag_id).submit(wf)


async def _runs_once_under_one_run(wf: Workflow, w: SimWorker, dag_id: str) -> str:
    assert await w.run_until_terminal(dag_id) is DAGStatus.DONE
    meta, steps = await wf.info(dag_id)
    assert {s.run_id for s in steps} == {meta.run_id}
    assert await wf.result(dag_id, "d", timeout=1) == 116
    return meta.run_id


@pytest.mark.parametrize(
    ("orphan", "mine", "kept"),
    [(LARGE, SMALL, SMALL), (SMALL, LARGE, SMALL)],
    ids=["takes_over_a_larger_run", "adopts_a_smaller_run"],
)
@pytest.mark.parametrize("lost", [set(), {"c", "d"}], ids=["all_written", "half_written"])
async def test_a_resubmit_reuses_the_orphaned_records_and_runs_under_one_run(
    monkeypatch: pytest.MonkeyPatch, orphan: str, mine: str, kept: str, lost: set[str]
) -> None:
    wf, store, bus, enq = make_wf()
    w = SimWorker(wf, enq, {"add": _add})
    await _die_before_meta(wf, store, "nightly", orphan, lost, monkeypatch)
    monkeypatch.setattr(dag_module, "new_run_id", lambda: mine)
    async with running(wf):
        await _diamond("nightly").submit(wf)
        assert await _runs_once_under_one_run(wf, w, "nightly") == kept
    assert sorted(enq.step_ids()) == ["a", "b", "c", "d"]  # each dispatched once
    await bus.close()


async def test_orphans_of_another_definition_still_refuse_the_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wf, store, bus, _ = make_wf()
    await _die_before_meta(wf, store, "nightly", LARGE, set(), monkeypatch)
    other = DAG(id="nightly")
    other.step("a", "add", 5, 5)
    with pytest.raises(StaleRevision, match="already exists"):
        await other.submit(wf)
    await bus.close()


async def test_a_committed_dag_is_never_taken_over(monkeypatch: pytest.MonkeyPatch) -> None:
    wf, _, bus, _ = make_wf()
    monkeypatch.setattr(dag_module, "new_run_id", lambda: LARGE)
    await _diamond("nightly").submit(wf)
    monkeypatch.setattr(dag_module, "new_run_id", lambda: SMALL)
    with pytest.raises(StaleRevision):
        await _diamond("nightly").submit(wf)
    meta, steps = await wf.info("nightly")
    assert meta.run_id == LARGE and {s.run_id for s in steps} == {LARGE}
    await bus.close()


@pytest.mark.parametrize("attempt", range(8))
async def test_two_producers_racing_on_one_id_commit_one_run(attempt: int) -> None:
    wf, _, bus, enq = make_wf()
    w = SimWorker(wf, enq, {"add": _add})
    dag_id = f"race{attempt}"
    async with running(wf):
        got = await asyncio.gather(
            _diamond(dag_id).submit(wf), _diamond(dag_id).submit(wf), return_exceptions=True
        )
        assert [o is None for o in got].count(True) == 1, got
        assert all(isinstance(o, StaleRevision) for o in got if o is not None)
        await _runs_once_under_one_run(wf, w, dag_id)
    await bus.close()
