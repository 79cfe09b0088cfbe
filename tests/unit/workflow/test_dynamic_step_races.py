"""Dynamic steps added to a DAG that is canceled meanwhile, or already finished, never wait
forever: the add is refused, or the step ends canceled (MemStore / MemBus, simulated worker)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from simworker import SimWorker, make_wf, running

from ebind.errors import DAGCanceled, DAGNotRunning, StepCanceled, StepNotFound
from ebind.workflow import DAG, ContextDAG, DAGStatus
from ebind.workflow.store_mem import MemStore


def _echo(ctx: object, *args: object) -> object:
    return list(args)


async def test_a_dynamic_step_added_while_the_dag_is_canceled_does_not_wait_forever() -> None:
    """cancel() lands between ContextDAG.step's status check and its create of the record.

    Cancel listed the steps before this one existed, and the scheduler ignores finished
    DAGs, so the add re-reads the DAG after creating the record: the step ends
    ``canceled`` and the add raises DAGCanceled.
    """
    wf, store, bus, enq = make_wf()
    assert isinstance(store, MemStore)
    w = SimWorker(wf, enq, {"echo": _echo})
    dag = DAG(id="dyn-cancel")
    dag.step("parent", "echo", 1)
    async with running(wf):
        await dag.submit(wf)
        env = w.take_new()[0]
        await w.deliver(env, run=False)  # the parent runs on w1

        real_get_meta = store.get_meta

        async def get_meta_then_cancel(dag_id: str):  # type: ignore[no-untyped-def]
            got = await real_get_meta(dag_id)
            store.get_meta = real_get_meta  # type: ignore[method-assign]
            await wf.cancel(dag_id)  # the operator's cancel lands right after the check
            return got

        store.get_meta = get_meta_then_cancel  # type: ignore[method-assign]
        with pytest.raises(DAGCanceled):
            await ContextDAG(wf, dag.id, "parent", "", "w1").step("late", "echo", 2)
        assert (await store.get_meta(dag.id))[0].status is DAGStatus.CANCELED
        await w.finish(msgspec.structs.replace(env, attempt=1, worker_id="w1"))  # parent ends
        await asyncio.sleep(0.5)  # several sweeps
        with pytest.raises(StepCanceled):
            await wf.result(dag.id, "late", timeout=2)
    await bus.close()


async def test_a_dynamic_step_added_to_a_finished_dag_is_refused() -> None:
    """A ContextDAG outliving its handler (a background task the handler started) adds a
    step to a DAG that already finished: refused with DAGNotRunning, since nothing would
    ever run or settle the step (the scheduler ignores finished DAGs)."""
    wf, store, bus, enq = make_wf()
    w = SimWorker(wf, enq, {"echo": _echo})
    dag = DAG(id="dyn-done")
    dag.step("parent", "echo", 1)
    async with running(wf):
        await dag.submit(wf)
        assert await w.run_until_terminal(dag.id) is DAGStatus.DONE
        late = ContextDAG(wf, dag.id, "parent", "", "w1")
        with pytest.raises(DAGNotRunning, match="is done; step 'late' not added"):
            await late.step("late", "echo", 2)
        with pytest.raises(StepNotFound):
            await store.get_step(dag.id, "late")
    await bus.close()
