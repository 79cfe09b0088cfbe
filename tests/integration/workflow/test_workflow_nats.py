"""Workflows end to end on a real nats-server: App + Worker + scheduler + NatsStore/NatsBus."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from wf_app import add, echo, fail, fanout, ranked, total, whoami

from ebind.app import App
from ebind.errors import (
    CycleError,
    DAGNotFound,
    DuplicateStep,
    InvalidArguments,
    InvalidName,
    PayloadTooLarge,
    StaleRevision,
    StepCanceled,
    StepFailed,
    StepSkipped,
)
from ebind.workflow import DAG, DAGStatus, StepStatus, signal_ref

HERE = Path(__file__).parent


async def wait_status(app: App, dag_id: str, *want: DAGStatus, limit: float = 20) -> DAGStatus:
    async with asyncio.timeout(limit):
        while True:
            meta, _ = await app.workflow.info(dag_id)
            if meta.status in want:
                return meta.status
            await asyncio.sleep(0.05)


async def test_linear_chain(app: App, start_worker: Any) -> None:
    await start_worker("w1")
    dag = DAG(id="linear")
    a = dag.step("a", add, 1, 2)
    b = dag.step("b", add, a.ref(), 10)
    c = dag.step("c", add, b.ref(), kwargs={"b": 100})
    await dag.submit(app.workflow)
    assert await app.workflow.result(dag.id, c, timeout=20) == 113
    assert await wait_status(app, dag.id, DAGStatus.DONE) is DAGStatus.DONE


async def test_a_step_runs_in_its_tasks_queue_and_band(app: App, start_worker: Any) -> None:
    await start_worker("wq")
    dag = DAG(id="queued")
    a = dag.step("a", add, 1, 2)
    b = dag.step("b", ranked, a.ref())
    await dag.submit(app.workflow)
    assert await app.workflow.result(dag.id, b, timeout=20) == 6
    _, records = await app.workflow.info(dag.id)
    (record,) = [r for r in records if r.step_id == "b"]
    assert (record.queue, record.priority) == ("wfq", "high")


async def test_fan_out_fan_in_with_refs_nested_in_a_list(app: App, start_worker: Any) -> None:
    await start_worker("w1", concurrency=8)
    dag = DAG(id="fan")
    leaves = [dag.step(f"leaf-{i}", add, i, i) for i in range(30)]
    out = dag.step("sum", total, [s.ref() for s in leaves])
    await dag.submit(app.workflow)
    assert await app.workflow.result(dag.id, out, timeout=30) == sum(2 * i for i in range(30))


async def test_optional_failure_with_default_and_cascade(app: App, start_worker: Any) -> None:
    await start_worker("w1")
    dag = DAG(id="optional")
    bad = dag.step("bad", fail, "kaput", optional=True)
    dflt = dag.step("dflt", echo, bad.ref_or_default("fallback"))
    skipped = dag.step("skipped", echo, bad.ref())
    await dag.submit(app.workflow)
    assert await app.workflow.result(dag.id, dflt, timeout=20) == "fallback"
    with pytest.raises(StepFailed, match="kaput"):
        await app.workflow.result(dag.id, bad, timeout=20)
    with pytest.raises(StepSkipped):
        await app.workflow.result(dag.id, skipped, timeout=20)
    assert await wait_status(app, dag.id, DAGStatus.FAILED) is DAGStatus.FAILED


async def test_dynamic_fan_out_colocated_with_the_parent(app: App, start_worker: Any) -> None:
    await start_worker("w1")
    await start_worker("w2")
    dag = DAG(id="dynamic")
    dag.step("root", fanout, 5)
    await dag.submit(app.workflow)
    assert await app.workflow.result(dag.id, "sum", timeout=30) == sum(range(5)) + 5000
    _, steps = await app.workflow.info(dag.id)
    by_id = {s.step_id: s for s in steps}
    assert {by_id[f"page-{i}"].worker_id for i in range(5)} == {by_id["root"].worker_id}


async def test_after_and_after_any(app: App, start_worker: Any) -> None:
    await start_worker("w1")
    dag = DAG(id="after")
    bad = dag.step("bad", fail, optional=True)
    ok = dag.step("ok", echo, 1)
    strict = dag.step("strict", echo, 2, after=[bad, ok])
    lenient = dag.step("lenient", echo, 3, after_any=[bad], after=[ok])
    await dag.submit(app.workflow)
    assert await app.workflow.result(dag.id, lenient, timeout=20) == 3
    with pytest.raises(StepSkipped):
        await app.workflow.result(dag.id, strict, timeout=20)


async def test_result_from_another_process_knowing_only_ids(
    app: App, start_worker: Any, nats_url: str
) -> None:
    dag = DAG(id="other-proc")
    a = dag.step("a", add, 20, 22)
    await dag.submit(app.workflow)
    code = (
        "import asyncio, sys\n"
        "from ebind import App\n"
        "async def main():\n"
        "    a = App('reader', nats_url=sys.argv[1])\n"
        "    await a.connect()\n"
        "    print('RESULT', await a.workflow.result('other-proc', 'a', timeout=30))\n"
        "    await a.close()\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, nats_url, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    await asyncio.sleep(0.5)  # the reader waits before the step even ran
    await start_worker("w1")
    out, err = await asyncio.wait_for(proc.communicate(), 40)
    assert proc.returncode == 0, err.decode()
    assert "RESULT 42" in out.decode()
    assert await app.workflow.result(dag.id, a, timeout=5) == 42  # and after completion


async def test_placement_across_two_workers_with_claims(app: App, start_worker: Any) -> None:
    await start_worker("w1", claims=["gpu"])
    await start_worker("w2")
    dag = DAG(id="placement")
    g = dag.step("gpu", whoami, "g", target="gpu")
    pinned = dag.step("pinned", whoami, "p", target="worker:w2")
    near = dag.step("near", whoami, "n", colocate_with=g)
    follow = dag.step("follow", whoami, "f", follow_target_of=g)
    await dag.submit(app.workflow)
    wf = app.workflow
    assert await wf.result(dag.id, g, timeout=20) == "w1"
    assert await wf.result(dag.id, pinned, timeout=20) == "w2"
    assert await wf.result(dag.id, near, timeout=20) == "w1"
    assert await wf.result(dag.id, follow, timeout=20) == "w1"


async def test_cancel_stops_scheduling(app: App, start_worker: Any) -> None:
    dag = DAG(id="cancel")
    a = dag.step("a", echo, 1)
    b = dag.step("b", echo, a.ref())
    await dag.submit(app.workflow)
    await app.workflow.cancel(dag.id)
    await start_worker("w1")
    with pytest.raises(StepCanceled):
        await app.workflow.result(dag.id, b, timeout=10)
    with pytest.raises(StepCanceled):
        await app.workflow.result(dag.id, a, timeout=10)
    meta, _ = await app.workflow.info(dag.id)
    assert meta.status is DAGStatus.CANCELED


async def test_pause_and_resume(app: App, start_worker: Any) -> None:
    dag = DAG(id="pause")
    a = dag.step("a", echo, 1)
    b = dag.step("b", echo, a.ref())
    await dag.submit(app.workflow)
    await app.workflow.pause(dag.id)  # a is dispatched: pausing until it completes
    await start_worker("w1")
    assert await wait_status(app, dag.id, DAGStatus.PAUSED) is DAGStatus.PAUSED
    await asyncio.sleep(1.0)
    _, steps = await app.workflow.info(dag.id)
    assert {s.step_id: s.status for s in steps}["b"] is StepStatus.PENDING
    await app.workflow.resume(dag.id)
    assert await app.workflow.result(dag.id, b, timeout=20) == 1


async def test_signals_including_one_sent_before_the_waiter_exists(
    app: App, start_worker: Any
) -> None:
    await start_worker("w1")
    wf = app.workflow
    dag = DAG(id="signals")
    first = dag.step("first", echo, "x")
    gated = dag.step("gated", echo, signal_ref("approval ✓ / 1.0"), after=[first])
    waits = dag.step("waits", echo, 2, wait_for_signals=["early"])
    await dag.submit(wf)
    assert await wf.signal(dag.id, "early") is True
    assert await wf.signal(dag.id, "early", "again") is False
    assert await wf.result(dag.id, waits, timeout=20) == 2
    await wf.result(dag.id, first, timeout=20)
    await asyncio.sleep(0.5)
    _, steps = await wf.info(dag.id)
    assert {s.step_id: s.status for s in steps}["gated"] is StepStatus.PENDING
    assert await wf.signal(dag.id, "approval ✓ / 1.0", {"by": "ops"}) is True
    assert await wf.result(dag.id, gated, timeout=20) == {"by": "ops"}
    with pytest.raises(DAGNotFound):
        await wf.signal("no-such-dag", "x")
    with pytest.raises(PayloadTooLarge):
        await wf.signal(dag.id, "huge", "x" * 2_000_000)


async def test_breakpoints(app: App, start_worker: Any) -> None:
    await start_worker("w1")
    wf = app.workflow
    dag = DAG(id="bp")
    a = dag.step("a", echo, 1)
    b = dag.step("b", echo, a.ref(), break_before=["check"])
    side = dag.step("side", echo, 2)
    await dag.submit(wf, active_breakpoints=["check"])
    assert await wf.result(dag.id, side, timeout=20) == 2
    async with asyncio.timeout(20):
        while True:
            if [i for i in await wf.list_breakpoints(dag.id) if i.state.value == "blocked"]:
                break
            await asyncio.sleep(0.05)
    assert await wf.resume_breakpoint(dag.id, "check") == 1
    assert await wf.result(dag.id, b, timeout=20) == 1


async def test_labels(app: App) -> None:
    wf = app.workflow
    for i, labels in enumerate([["billing"], ["billing", "nightly"], []]):
        d = DAG(id=f"lab{i}", labels=labels)
        d.step("a", echo, i)
        await d.submit(wf)
        await asyncio.sleep(0.01)
    assert [m.id for m in await wf.list_dags(["billing"])] == ["lab1", "lab0"]
    assert [m.id for m in await wf.list_dags(["nightly", "billing"])] == ["lab1"]
    assert [m.id for m in await wf.list_dags()] == ["lab2", "lab1", "lab0"]


async def test_bad_input_is_rejected_and_nothing_persisted(app: App) -> None:
    wf = app.workflow
    for bad in ["", " ", "a.b", "*", ">", "a/b", ".a", "$SYS", "café", "\n", "x" * 10_000]:
        with pytest.raises(InvalidName):
            DAG(id=bad)
        with pytest.raises(InvalidName):
            DAG(id="ok").step(bad, echo, 1)
    with pytest.raises(InvalidArguments, match="'a'"):
        DAG().step("s", add, "not-an-int", 1)
    with pytest.raises(InvalidArguments):
        DAG().step("s", add, 1, 2, 3)
    cyc = DAG(id="cyc")
    x = cyc.step("x", echo, 1, after=["z"])
    y = cyc.step("y", echo, x.ref())
    cyc.step("z", echo, y.ref(), after_any=["x"])
    with pytest.raises(CycleError):
        await cyc.submit(wf)
    with pytest.raises(DAGNotFound):
        await wf.info("cyc")
    assert await wf.store.list_steps("cyc") == []
    dup = DAG(id="dup")
    dup.step("a", echo, 1)
    with pytest.raises(DuplicateStep):
        dup.step("a", echo, 2)
    await dup.submit(wf)
    again = DAG(id="dup")
    again.step("a", echo, 1)
    with pytest.raises(StaleRevision):
        await again.submit(wf)
    assert app.nc.is_connected


def test_examples_env_is_clean() -> None:
    assert "EBIND_CRASHPOINT" not in os.environ


async def test_from_nats_workflow_shares_state_with_the_app(
    app: App, start_worker: Any, nats_url: str
) -> None:
    import io

    import nats

    from ebind.workflow import Workflow

    nc = await nats.connect(nats_url)
    try:
        wf = await Workflow.from_nats(nc)
        await start_worker("w1")
        dag = DAG(id="from-nats")
        a = dag.step("a", add, 2, 3)
        await dag.submit(wf)
        assert await wf.result(dag.id, a, timeout=20) == 5
        assert (await wf.wait(dag.id, timeout=20)).status is DAGStatus.DONE
        out = io.StringIO()
        await app.workflow.debug_print(dag.id, file=out)
        assert "✓  a" in out.getvalue()
        dbg = await wf.debug(dag.id)
        assert dbg.counts[StepStatus.DONE] == 1
        await wf.delete_dag(dag.id)
        with pytest.raises(DAGNotFound):
            await app.workflow.info(dag.id)
    finally:
        await nc.close()


async def test_a_step_whose_resolved_arguments_exceed_max_payload_fails_with_encode(
    app: App, start_worker: Any
) -> None:
    await start_worker("w1")
    dag = DAG(id="toolarge")
    big = dag.step("big", echo, "x" * 600_000)  # fits; two copies of it do not
    both = dag.step("both", echo, [big.ref(), big.ref()])
    after = dag.step("after", echo, both.ref())
    side = dag.step("side", echo, 1)
    await dag.submit(app.workflow)
    with pytest.raises(StepFailed, match="max_payload"):
        await app.workflow.result(dag.id, both, timeout=20)
    with pytest.raises(StepSkipped):
        await app.workflow.result(dag.id, after, timeout=20)
    assert await app.workflow.result(dag.id, side, timeout=20) == 1
    assert await wait_status(app, dag.id, DAGStatus.FAILED) is DAGStatus.FAILED
    _, steps = await app.workflow.info(dag.id)
    rec = {s.step_id: s for s in steps}["both"]
    assert rec.error_kind == "encode" and "1200" in rec.error_message  # names the size
    assert len(await app.workflow.result(dag.id, big, timeout=5)) == 600_000  # nothing lost
