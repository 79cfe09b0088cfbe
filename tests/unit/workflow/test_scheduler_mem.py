"""Scheduler + hook + submit over MemStore / MemBus / CaptureEnqueuer (the worker is simulated)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from simworker import SimCtx, SimWorker, make_wf, running

from ebind.errors import (
    CycleError,
    DAGCanceled,
    DAGNotFound,
    DAGNotPaused,
    DAGNotRunning,
    DuplicateStep,
    InvalidArguments,
    InvalidName,
    PayloadTooLarge,
    StaleRevision,
    StepCanceled,
    StepFailed,
    StepSkipped,
)
from ebind.wire import TaskError
from ebind.worker.hook import StepUnproven
from ebind.workflow import DAG, CaptureEnqueuer, DAGStatus, StepStatus, Workflow, truncate_error
from ebind.workflow.store_mem import MemStore
from ebind.workflow.types import DAGMeta, StepRecord


def _add(ctx: SimCtx, a: int, b: int) -> int:
    return a + b


def _total(ctx: SimCtx, xs: list[int]) -> int:
    return sum(xs)


def _boom(ctx: SimCtx, *args: Any) -> int:
    raise RuntimeError("boom")


def _echo(ctx: SimCtx, *args: Any) -> Any:
    return list(args)


HANDLERS = {"add": _add, "total": _total, "boom": _boom, "echo": _echo}


async def test_linear_chain_runs_in_order_and_results_are_typed_json() -> None:
    wf, _, bus, enq = make_wf()
    w = SimWorker(wf, enq, HANDLERS)
    dag = DAG(id="chain")
    a = dag.step("a", "add", 1, 2)
    b = dag.step("b", "add", a.ref(), 10)
    c = dag.step("c", "add", b.ref(), 100)
    async with running(wf):
        await dag.submit(wf)
        assert await w.run_until_terminal(dag.id) is DAGStatus.DONE
        assert await wf.result(dag.id, c, timeout=1) == 113
        assert await wf.result(dag.id, "a", timeout=1) == 3
    assert enq.step_ids() == ["a", "b", "c"]
    assert all(e.id == f"chain:{e.step_id}" for e in enq.envelopes)
    assert [mid for _, mid in enq.calls] == ["chain:a:1", "chain:b:1", "chain:c:1"]
    await bus.close()


async def test_fan_out_fan_in_with_refs_nested_in_a_list() -> None:
    wf, _, bus, enq = make_wf()
    w = SimWorker(wf, enq, HANDLERS)
    dag = DAG(id="fan")
    leaves = [dag.step(f"l{i}", "add", i, 0) for i in range(20)]
    total = dag.step("total", "total", [s.ref() for s in leaves])
    async with running(wf):
        await dag.submit(wf)
        assert await w.run_until_terminal(dag.id) is DAGStatus.DONE
        assert await wf.result(dag.id, total, timeout=1) == sum(range(20))
    await bus.close()


async def test_failure_cascades_skip_and_optional_default_substitutes() -> None:
    wf, _, bus, enq = make_wf()
    w = SimWorker(wf, enq, HANDLERS)
    dag = DAG(id="opt")
    bad = dag.step("bad", "boom", optional=True)
    dep = dag.step("dep", "echo", bad.ref())
    dflt = dag.step("dflt", "echo", bad.ref_or_default({"x": 1}))
    after = dag.step("after", "echo", 5, after=[bad])
    any_ = dag.step("any", "echo", 6, after_any=[bad])
    async with running(wf):
        await dag.submit(wf)
        status = await w.run_until_terminal(dag.id)
        with pytest.raises(StepFailed, match="boom"):
            await wf.result(dag.id, bad, timeout=1)
        with pytest.raises(StepSkipped):
            await wf.result(dag.id, dep, timeout=1)
        with pytest.raises(StepSkipped):
            await wf.result(dag.id, after, timeout=1)
        assert await wf.result(dag.id, dflt, timeout=1) == [{"x": 1}]
        assert await wf.result(dag.id, any_, timeout=1) == [6]
    # dep and after are required-skipped non-optional steps, so the DAG failed.
    assert status is DAGStatus.FAILED
    await bus.close()


async def test_all_failures_optional_means_done() -> None:
    wf, _, bus, enq = make_wf()
    w = SimWorker(wf, enq, HANDLERS)
    dag = DAG(id="optok")
    bad = dag.step("bad", "boom", optional=True)
    dag.step("dflt", "echo", bad.ref_or_default(0))
    async with running(wf):
        await dag.submit(wf)
        assert await w.run_until_terminal(dag.id) is DAGStatus.DONE
    await bus.close()


async def test_submit_validation_rejects_before_anything_is_persisted() -> None:
    wf, store, bus, _ = make_wf()
    dag = DAG(id="cyc")
    dag.step("a", "echo", after=["b"])
    dag.step("b", "echo", after=["a"])
    with pytest.raises(CycleError):
        await dag.submit(wf)
    assert await store.list_steps("cyc") == []
    with pytest.raises(DAGNotFound):
        await store.get_meta("cyc")
    d2 = DAG(id="dup")
    d2.step("a", "echo")
    with pytest.raises(DuplicateStep):
        d2.step("a", "echo")
    for bad in ("a.b", "", "*", "café", "x" * 200):
        with pytest.raises(InvalidName):
            d2.step(bad, "echo")
    with pytest.raises(InvalidName):
        DAG(id="a b")
    d3 = DAG(id="unknown")
    d3.step("a", "echo", after=["ghost"])
    with pytest.raises(InvalidArguments, match="ghost"):
        await d3.submit(wf)
    await bus.close()


async def test_second_submit_of_an_id_is_stale_revision() -> None:
    wf, _, bus, enq = make_wf()
    d1 = DAG(id="same")
    d1.step("a", "echo", 1)
    await d1.submit(wf)
    with pytest.raises(StaleRevision):
        await d1.submit(wf)
    d2 = DAG(id="same")
    d2.step("a", "echo", 1)
    with pytest.raises(StaleRevision):
        await d2.submit(wf)
    assert enq.step_ids() == ["a"]
    await bus.close()


async def test_stale_attempt_result_is_fenced_out() -> None:
    wf, store, bus, enq = make_wf(start_write_delay=0)
    dag = DAG(id="fence")
    dag.step("a", "echo", 1)
    await dag.submit(wf)
    env = enq.envelopes[0]
    hook = wf.hook()
    first = msgspec.structs.replace(env, attempt=1, worker_id="w1")
    second = msgspec.structs.replace(env, attempt=2, worker_id="w2")
    assert await hook.on_step_started(first)
    assert await hook.on_step_started(second)  # redelivery after w1 stalled past ack_wait
    await hook.on_step_done(first, b'"stale"')  # dropped: w1 no longer owns the step
    rec, _ = await store.get_step("fence", "a")
    assert rec.status is StepStatus.RUNNING and rec.worker_id == "w2"
    await hook.on_step_done(second, b'"fresh"')
    assert (
        await store.get_result("fence", "a", (await store.get_step("fence", "a"))[0].run_id)
        == b'"fresh"'
    )
    rec, _ = await store.get_step("fence", "a")
    assert rec.status is StepStatus.DONE and rec.attempt == 2
    # A late duplicate delivery of a finished step is not run.
    assert not await hook.on_step_started(msgspec.structs.replace(env, attempt=3, worker_id="w3"))
    await wf.close()
    await bus.close()


async def test_failed_step_message_is_truncated_on_a_utf8_boundary() -> None:
    assert truncate_error("abcdef", 4) == "a…"  # the 3-byte marker counts against the cap
    assert truncate_error("ééé", 5) == "é…"
    assert truncate_error("ééé", 4) == "…"  # half a character is never kept
    assert truncate_error("abcdef", 2) == "ab"  # no room for the marker
    assert truncate_error("short", 4096) == "short"
    assert truncate_error("anything", -1) == ""

    wf, store, bus, enq = make_wf(max_step_error_bytes=5)
    dag = DAG(id="trunc")
    dag.step("a", "boom")
    await dag.submit(wf)
    env = msgspec.structs.replace(enq.envelopes[0], attempt=1, worker_id="w1")
    hook = wf.hook()
    assert await hook.on_step_started(env)
    await hook.on_step_failed(env, TaskError(kind="handler", message="x" * 100))
    rec, _ = await store.get_step("trunc", "a")
    assert (rec.error_kind, rec.error_message) == ("handler", "xx…")  # 5 bytes in all
    await wf.close()
    await bus.close()


@given(st.text(max_size=300), st.integers(min_value=1, max_value=400))
def test_truncate_error_is_a_hard_bound_in_bytes(message: str, limit: int) -> None:
    out = truncate_error(message, limit)
    assert len(out.encode("utf-8", "surrogatepass")) <= limit
    assert out == message or message.startswith(out.removesuffix("…"))


async def test_result_errors_are_prompt() -> None:
    wf, _, bus, _ = make_wf()
    with pytest.raises(DAGNotFound):
        await wf.result("nope", "a", timeout=5)
    dag = DAG(id="slow")
    dag.step("a", "echo")
    await dag.submit(wf)
    with pytest.raises(TimeoutError):
        await wf.result("slow", "a", timeout=0.05)
    await bus.close()


async def test_cancel_cancels_pending_and_schedules_nothing_more() -> None:
    wf, store, bus, enq = make_wf()
    w = SimWorker(wf, enq, HANDLERS)
    dag = DAG(id="cx")
    a = dag.step("a", "echo", 1)
    b = dag.step("b", "echo", a.ref())
    async with running(wf):
        await dag.submit(wf)
        env = w.take_new()[0]
        await w.deliver(env, run=False)  # a is running on w1
        await wf.cancel(dag.id)
        meta, _ = await store.get_meta(dag.id)
        assert meta.status is DAGStatus.CANCELED
        with pytest.raises(StepCanceled):
            await wf.result(dag.id, b, timeout=1)
        live = msgspec.structs.replace(env, attempt=1, worker_id="w1")
        await w.finish(live)  # a may still finish
        assert await wf.result(dag.id, a, timeout=1) == [1]
        await asyncio.sleep(0.2)
    assert enq.step_ids() == ["a"]
    await wf.cancel(dag.id)  # idempotent
    with pytest.raises(DAGCanceled):
        await _dynamic_on_canceled(wf, dag.id)
    await bus.close()


async def _dynamic_on_canceled(wf: Workflow, dag_id: str) -> None:
    from ebind.workflow import ContextDAG

    await ContextDAG(wf, dag_id, "a", "", "w1").step("late", "echo", 1)


async def test_pause_fences_and_resume_continues() -> None:
    wf, store, bus, enq = make_wf()
    w = SimWorker(wf, enq, HANDLERS)
    dag = DAG(id="pz")
    a = dag.step("a", "echo", 1)
    b = dag.step("b", "echo", a.ref())
    async with running(wf):
        await dag.submit(wf)
        env = w.take_new()[0]
        await w.deliver(env, run=False)
        await wf.pause(dag.id)
        assert (await store.get_meta(dag.id))[0].status is DAGStatus.PAUSING
        with pytest.raises(DAGNotRunning):
            await wf.pause(dag.id)
        with pytest.raises(DAGNotPaused):
            await wf.resume(dag.id)
        await w.finish(msgspec.structs.replace(env, attempt=1, worker_id="w1"))
        for _ in range(200):
            if (await store.get_meta(dag.id))[0].status is DAGStatus.PAUSED:
                break
            await asyncio.sleep(0.01)
        assert (await store.get_meta(dag.id))[0].status is DAGStatus.PAUSED
        await asyncio.sleep(0.2)  # sweeps run; nothing may be dispatched while paused
        assert enq.step_ids() == ["a"]
        await wf.resume(dag.id)
        assert await w.run_until_terminal(dag.id) is DAGStatus.DONE
        assert await wf.result(dag.id, b, timeout=1) == [[1]]
    await bus.close()


async def test_dynamic_steps_depend_on_parent_and_readd_is_idempotent() -> None:
    async def spawn(ctx: SimCtx, n: int) -> int:
        steps = [await ctx.dag.step(f"page-{i}", "add", i, 100) for i in range(n)]
        await ctx.dag.step("page-0", "add", 0, 100)  # parent retry re-adds: no-op
        with pytest.raises(DuplicateStep):
            await ctx.dag.step("page-0", "echo")
        with pytest.raises(InvalidArguments, match="ghost"):
            await ctx.dag.step("x", "echo", after=["ghost"])
        await ctx.dag.step("sum", "total", [s.ref() for s in steps])
        return n

    wf, _, bus, enq = make_wf()
    w = SimWorker(wf, enq, {**HANDLERS, "spawn": spawn})
    dag = DAG(id="dyn")
    dag.step("root", "spawn", 3)
    async with running(wf):
        await dag.submit(wf)
        assert await w.run_until_terminal(dag.id) is DAGStatus.DONE
        assert await wf.result(dag.id, "sum", timeout=1) == 303
    await bus.close()


async def test_signals_are_buffered_first_wins_and_checked() -> None:
    from ebind.workflow import signal_ref

    wf, _, bus, enq = make_wf()
    w = SimWorker(wf, enq, HANDLERS)
    dag = DAG(id="sig")
    a = dag.step("a", "echo", 1)
    gated = dag.step("gated", "echo", a.ref(), signal_ref("approve me?"))
    waits = dag.step("waits", "echo", 2, wait_for_signals=["go"])
    async with running(wf):
        await dag.submit(wf)
        assert await wf.signal(dag.id, "go", None) is True  # before anything waits for it
        assert await wf.signal(dag.id, "go", "again") is False
        await asyncio.sleep(0.1)
        await w.pump()
        await asyncio.sleep(0.1)
        await w.pump()
        assert await wf.result(dag.id, waits, timeout=1) == [2]
        assert "gated" not in enq.step_ids()
        assert await wf.signal(dag.id, "approve me?", {"ok": True}) is True
        assert await w.run_until_terminal(dag.id) is DAGStatus.DONE
        assert await wf.result(dag.id, gated, timeout=1) == [[1], {"ok": True}]
        with pytest.raises(DAGNotFound):
            await wf.signal("nope", "go")
        wf.max_signal_payload = 10
        with pytest.raises(PayloadTooLarge):
            await wf.signal(dag.id, "big", "x" * 100)
        assert await wf.signal(dag.id, "late") is False  # finished DAG takes no signals
    await bus.close()


async def test_breakpoints_stop_release_and_stay_armed() -> None:
    wf, _, bus, enq = make_wf()
    w = SimWorker(wf, enq, HANDLERS)
    dag = DAG(id="bp")
    a = dag.step("a", "echo", 1, break_after=["inspect"])
    b = dag.step("b", "echo", a.ref(), break_before=["inspect"])
    dag.step("free", "echo", 3)
    unarmed = dag.step("unarmed", "echo", 4, break_before=["other"])
    async with running(wf):
        await dag.submit(wf, active_breakpoints=["inspect"])
        await asyncio.sleep(0.1)
        await w.pump()
        await asyncio.sleep(0.1)
        assert set(enq.step_ids()) == {"a", "free", "unarmed"}
        assert await wf.result(dag.id, unarmed, timeout=1) == [4]
        infos = {(i.step_id, i.position): i for i in await wf.list_breakpoints(dag.id)}
        assert infos[("a", "after")].state.value == "blocked"
        assert await wf.resume_breakpoint(dag.id, "inspect") == 1  # a's after-bp
        await asyncio.sleep(0.1)
        assert "b" not in enq.step_ids()  # b's own before-bp now stops it
        assert await wf.resume_breakpoint(dag.id, "inspect") == 1
        assert await w.run_until_terminal(dag.id) is DAGStatus.DONE
        assert await wf.result(dag.id, b, timeout=1) == [[1]]
    await bus.close()


async def test_labels_and_list_dags_newest_first() -> None:
    wf, _, bus, _ = make_wf()
    for i, labels in enumerate([("billing",), ("billing", "nightly"), ("nightly",)]):
        d = DAG(id=f"l{i}", labels=labels)
        d.step("a", "echo", i)
        await d.submit(wf)
        await asyncio.sleep(0.002)
    assert [m.id for m in await wf.list_dags()] == ["l2", "l1", "l0"]
    assert [m.id for m in await wf.list_dags(["billing"])] == ["l1", "l0"]
    assert [m.id for m in await wf.list_dags(["billing", "nightly"])] == ["l1"]
    with pytest.raises(InvalidArguments):
        DAG(labels=[""])
    await bus.close()


async def test_info_debug_and_delete() -> None:
    import io

    wf, _, bus, enq = make_wf()
    w = SimWorker(wf, enq, HANDLERS)
    dag = DAG(id="dbg")
    dag.step("a", "echo", 1)
    async with running(wf):
        await dag.submit(wf)
        await w.run_until_terminal(dag.id)
    meta, steps = await wf.info(dag.id)
    assert meta.status is DAGStatus.DONE and [s.step_id for s in steps] == ["a"]
    out = io.StringIO()
    await wf.debug_print(dag.id, file=out)
    assert "DAG dbg" in out.getvalue()
    await wf.delete_dag(dag.id)
    with pytest.raises(DAGNotFound):
        await wf.info(dag.id)
    with pytest.raises(DAGNotFound):
        await wf.delete_dag(dag.id)
    await bus.close()


# -- reconciliation -------------------------------------------------------------------------


async def test_sweep_dispatches_roots_when_submit_enqueue_failed() -> None:
    wf, store, bus, enq = make_wf()
    enq.fail_next(ConnectionError("nats down"), count=1)
    w = SimWorker(wf, enq, HANDLERS)
    dag = DAG(id="d3")
    dag.step("a", "echo", 1)
    with pytest.raises(Exception, match="nats down"):
        await dag.submit(wf)  # meta committed, root CAS'd to running, publish failed
    rec, _ = await store.get_step("d3", "a")
    assert rec.status is StepStatus.RUNNING and rec.attempt == 0
    async with running(wf):
        assert await w.run_until_terminal("d3") is DAGStatus.DONE
    await bus.close()


async def test_a_step_the_server_refuses_as_too_large_fails_instead_of_lingering() -> None:
    def refuse(env: Any, _mid: str) -> BaseException | None:
        if env.step_id == "b":
            return PayloadTooLarge("encodes to 2000000 bytes (max_payload)", size=2_000_000)
        return None

    wf, store, bus, enq = make_wf(enq=CaptureEnqueuer(fail=refuse))
    w = SimWorker(wf, enq, HANDLERS)
    dag = DAG(id="big")
    a = dag.step("a", "echo", 1)
    b = dag.step("b", "echo", a.ref())
    dag.step("c", "echo", b.ref())
    async with running(wf):
        await dag.submit(wf)
        assert await w.run_until_terminal("big") is DAGStatus.FAILED
    recs = {r.step_id: r for r, _ in await store.list_steps("big")}
    assert (recs["b"].status, recs["b"].error_kind) == (StepStatus.FAILED, "encode")
    assert "2000000 bytes" in recs["b"].error_message
    assert recs["c"].status is StepStatus.SKIPPED
    await bus.close()


async def test_sweep_rescues_pending_roots_after_a_crash_before_dispatch() -> None:
    wf, store, bus, enq = make_wf()
    w = SimWorker(wf, enq, HANDLERS)
    dag = DAG(id="crash")
    a = dag.step("a", "echo", 1)
    dag.step("b", "echo", a.ref())
    # Simulate submit.after_meta: the live entry and records exist, the process died
    # before dispatching.
    from datetime import UTC, datetime, timedelta

    from ebind.workflow.lifecycle import LiveEntry, encode_live

    then = datetime.now(UTC) - timedelta(seconds=5)
    await store.put_live("crash", encode_live(LiveEntry(at=then)))
    for rec in dag.records:
        await store.put_step("crash", rec.step_id, rec, 0)
    from ebind.workflow import DAGMeta

    await store.put_meta(
        "crash", DAGMeta(id="crash", status=DAGStatus.RUNNING, created_at=datetime.now(UTC)), 0
    )
    async with running(wf):
        assert await w.run_until_terminal("crash") is DAGStatus.DONE
    await bus.close()


async def test_started_step_of_a_dead_worker_is_reenqueued_as_a_new_generation() -> None:
    wf, store, bus, enq = make_wf()
    w = SimWorker(wf, enq, HANDLERS)
    dag = DAG(id="d7")
    dag.step("a", "echo", 1)
    async with running(wf):
        await dag.submit(wf)
        env = w.take_new()[0]
        await w.deliver(env, worker_id="ghost", run=False)  # ghost dies; its message is gone
        assert wf.liveness is not None
        await asyncio.sleep(0.05)
        wf.liveness.forget("ghost")  # type: ignore[attr-defined]
        wf.hook()._tracker.running.pop("ghost", None)
        assert await w.run_until_terminal("d7") is DAGStatus.DONE
    rec, _ = await store.get_step("d7", "a")
    first = int(env.trace_ctx["ebind-generation"])
    assert rec.generation > first and rec.worker_id == "w1"
    assert [mid for _, mid in enq.calls][-1] == f"d7:a:{rec.generation}"
    # The dead generation's message, if it ever shows up, is not run.
    assert not await wf.hook().on_step_started(
        msgspec.structs.replace(env, attempt=5, worker_id="w9")
    )
    await bus.close()


async def test_poison_events_do_not_stop_the_scheduler() -> None:
    wf, _, bus, enq = make_wf()
    w = SimWorker(wf, enq, HANDLERS)
    async with running(wf):
        await bus.publish("DAG.x.completed.y", b"\x00garbage")
        await bus.publish("DAG.gone.completed.a", b'{"kind":"completed","dag_id":"gone"}')
        dag = DAG(id="after-poison")
        dag.step("a", "echo", 1)
        await dag.submit(wf)
        assert await w.run_until_terminal(dag.id) is DAGStatus.DONE
        async with asyncio.timeout(2):
            await bus.join()
    await bus.close()


# -- seeded simulation and operator races ---------------------------------------------------


class FlipElector:
    def __init__(self) -> None:
        self.leader = True

    def is_leader(self) -> bool:
        return self.leader


def _random_dag(rng: random.Random, dag_id: str) -> DAG:
    dag = DAG(id=dag_id)
    steps: list[Any] = []
    for i in range(rng.randint(2, 9)):
        args: list[Any] = [i]
        after: list[Any] = []
        after_any: list[Any] = []
        for up in rng.sample(steps, k=min(len(steps), rng.randint(0, 3))):
            kind = rng.random()
            if kind < 0.4:
                args.append(up.ref())
            elif kind < 0.6:
                args.append([up.ref_or_default(-1)])
            elif kind < 0.8:
                after.append(up)
            else:
                after_any.append(up)
        fn = "boom" if rng.random() < 0.15 else "echo"
        steps.append(
            dag.step(
                f"s{i}", fn, *args, optional=rng.random() < 0.3, after=after, after_any=after_any
            )
        )
    return dag


async def _simulate(
    seed: int, wf: Workflow, enq: Any, elector: FlipElector, dags: list[DAG]
) -> None:
    rng = random.Random(seed)
    w = SimWorker(wf, enq, HANDLERS)
    queue: list[Any] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while loop.time() < deadline:
        for env in w.take_new():
            queue.append(env)
            if rng.random() < 0.1:
                queue.append(env)  # duplicate delivery
        if rng.random() < 0.03:
            elector.leader = not elector.leader
        elif not elector.leader and rng.random() < 0.2:
            elector.leader = True
        if queue:
            env = queue.pop(rng.randrange(len(queue)))  # reordered deliveries
            run = rng.random() > 0.05
            try:
                await w.deliver(env, run=run)
            except StaleRevision:
                queue.append(env)  # the worker naks; JetStream redelivers
            except StepUnproven:
                # A message whose dispatch never showed in the record (its CAS lost to an
                # injected fault, or had not landed by the third delivery on a loaded
                # host): the worker dead-letters it and the sweep dispatches the step again.
                pass
            else:
                if not run or rng.random() < 0.05:
                    queue.append(env)  # died mid-step (redelivered) or a late duplicate
        else:
            await asyncio.sleep(0.005)
        metas = [(await wf.store.get_meta(d.id))[0] for d in dags]
        if all(m.status.terminal for m in metas) and elector.leader:
            return
        await asyncio.sleep(0)
    pytest.fail(f"seed {seed}: DAGs not terminal: {[m.status for m in metas]}")


async def _check_outcomes(wf: Workflow, dag: DAG) -> None:
    meta, steps = await wf.info(dag.id)
    by_id = {s.step_id: s for s in steps}
    for rec in steps:
        assert rec.is_terminal(), rec
        bad_deps = [d for d in rec.deps if by_id[d].status is not StepStatus.DONE]
        if rec.status is StepStatus.DONE:
            assert rec.fn_name == "echo"
            value = await wf.result(dag.id, rec.step_id, timeout=1)
            assert value[0] == int(rec.step_id[1:])
        elif rec.status is StepStatus.SKIPPED:
            assert bad_deps, rec
        elif rec.status is StepStatus.FAILED:
            assert rec.fn_name == "boom" and rec.error_message == "boom"
    failed = any(
        s.status in (StepStatus.FAILED, StepStatus.SKIPPED) and not s.optional for s in steps
    )
    assert meta.status is (DAGStatus.FAILED if failed else DAGStatus.DONE)


@pytest.mark.parametrize("seed", range(6), ids=lambda s: f"seed={s}")
async def test_seeded_simulation_with_faults_converges(seed: int) -> None:
    rng = random.Random(seed * 7919)
    faults_on = False

    def faults(op: str, key: str) -> None:
        if faults_on and op in ("put_step", "put_meta") and rng.random() < 0.05:
            raise StaleRevision(f"injected on {key}")

    from ebind.workflow import MemStore

    elector = FlipElector()
    wf, _, bus, enq = make_wf(store=MemStore(faults=faults), elector=elector)
    dags = [_random_dag(rng, f"sim{seed}-{i}") for i in range(4)]
    async with running(wf):
        for d in dags:
            await d.submit(wf)
        faults_on = True
        await _simulate(seed, wf, enq, elector, dags)
        faults_on = False
        for d in dags:
            await _check_outcomes(wf, d)
    await bus.close()


@pytest.mark.parametrize("seed", range(4), ids=lambda s: f"seed={s}")
async def test_pause_resume_cancel_races_keep_seed_semantics(seed: int) -> None:
    rng = random.Random(seed)
    wf, store, bus, enq = make_wf()
    w = SimWorker(wf, enq, HANDLERS)
    dags = [_random_dag(rng, f"race{seed}-{i}") for i in range(3)]
    canceled: set[str] = set()
    async with running(wf):
        for d in dags:
            await d.submit(wf)
        for _ in range(60):
            await w.pump()
            d = rng.choice(dags)
            op = rng.random()
            with contextlib.suppress(DAGNotRunning, DAGNotPaused):
                if op < 0.2:
                    await wf.pause(d.id)
                elif op < 0.4:
                    await wf.resume(d.id)
                elif op < 0.43 and len(canceled) < 1:
                    await wf.cancel(d.id)
                    if (await store.get_meta(d.id))[0].status is DAGStatus.CANCELED:
                        canceled.add(d.id)  # (a finished DAG ignores cancel)
            await asyncio.sleep(0.005)
        for d in dags:  # settle: a paused DAG makes no progress, then resume it
            meta = (await store.get_meta(d.id))[0]
            if meta.status in (DAGStatus.PAUSING, DAGStatus.PAUSED):
                for _ in range(100):
                    await w.pump()
                    if (await store.get_meta(d.id))[0].status is not DAGStatus.PAUSING:
                        break
                    await asyncio.sleep(0.01)
                if (await store.get_meta(d.id))[0].status is DAGStatus.PAUSED:
                    before = [(r.step_id, r.status) for r in (await wf.info(d.id))[1]]
                    await asyncio.sleep(0.15)
                    await w.pump()
                    assert [(r.step_id, r.status) for r in (await wf.info(d.id))[1]] == before
                    with contextlib.suppress(DAGNotPaused):
                        await wf.resume(d.id)
        for d in dags:
            status = await w.run_until_terminal(d.id)
            if d.id in canceled:
                assert status is DAGStatus.CANCELED
            else:
                await _check_outcomes(wf, d)
    await bus.close()


async def test_fast_steps_skip_the_running_write_slow_ones_record_their_owner() -> None:
    wf, store, bus, enq = make_wf(start_write_delay=0.05)
    dag = DAG(id="lazy")
    dag.step("fast", "echo", 1)
    dag.step("slow", "echo", 2)
    await dag.submit(wf)
    hook = wf.hook()
    fast, slow = (msgspec.structs.replace(e, attempt=1, worker_id="w1") for e in enq.envelopes)
    revs = {s: (await store.get_step("lazy", s))[1] for s in ("fast", "slow")}
    assert await hook.on_step_started(fast)
    await hook.on_step_done(fast, b"1")
    rec, rev = await store.get_step("lazy", "fast")
    assert rec.status is StepStatus.DONE and rec.worker_id == "w1" and rev == revs["fast"] + 1
    assert await hook.on_step_started(slow)
    await asyncio.sleep(0.15)
    rec, _ = await store.get_step("lazy", "slow")
    assert (rec.status, rec.attempt, rec.worker_id) == (StepStatus.RUNNING, 1, "w1")
    await hook.on_step_done(slow, b"2")
    assert (await store.get_step("lazy", "slow"))[0].status is StepStatus.DONE
    await wf.close()
    await bus.close()


async def test_dispatched_step_of_a_canceled_dag_is_canceled_on_arrival() -> None:
    wf, store, bus, enq = make_wf()
    dag = DAG(id="cx2")
    dag.step("a", "echo", 1)
    await dag.submit(wf)
    await wf.cancel("cx2")
    env = msgspec.structs.replace(enq.envelopes[0], attempt=1, worker_id="w1")
    assert not await wf.hook().on_step_started(env)
    assert (await store.get_step("cx2", "a"))[0].status is StepStatus.CANCELED
    await bus.close()


async def test_dynamic_steps_carry_the_trace_context_set_on_the_context_dag() -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    async def spawn(ctx: SimCtx) -> int:
        ctx.dag.trace_ctx["traceparent"] = parent  # what tracing middleware does
        await ctx.dag.step("child", "echo", 1)
        return 0

    wf, store, bus, enq = make_wf()
    w = SimWorker(wf, enq, {**HANDLERS, "spawn": spawn})
    dag = DAG(id="traced")
    dag.step("root", "spawn")
    async with running(wf):
        await dag.submit(wf)
        assert await w.run_until_terminal("traced") is DAGStatus.DONE
    recs = {r.step_id: r for r, _ in await store.list_steps("traced")}
    assert recs["child"].trace_ctx == {"traceparent": parent}
    assert recs["root"].trace_ctx == {}
    (env,) = [e for e in enq.envelopes if e.step_id == "child"]
    assert env.trace_ctx["traceparent"] == parent
    assert env.trace_ctx["ebind-generation"] == str(recs["child"].generation)
    await bus.close()


async def test_a_hold_left_on_a_running_dag_is_released_by_the_next_full_pass() -> None:
    # E.g. a pass that read the meta just before a resume fenced the step after the
    # resume had released the holds: nothing else would ever release it.
    wf, store, bus, enq = make_wf()
    w = SimWorker(wf, enq, HANDLERS)
    dag = DAG(id="stuck")
    a = dag.step("a", "echo", 1)
    dag.step("b", "echo", 2, after=[a])
    await dag.submit(wf)
    rec, rev = await store.get_step("stuck", "b")
    await store.put_step("stuck", "b", msgspec.structs.replace(rec, held=True), rev)
    async with running(wf):
        assert await w.run_until_terminal("stuck") is DAGStatus.DONE
    rec, _ = await store.get_step("stuck", "b")
    assert rec.status is StepStatus.DONE and not rec.held
    await bus.close()


async def test_a_dispatched_step_the_sweep_cannot_resend_as_too_large_fails() -> None:
    wf, store, bus, enq = make_wf()
    dag = DAG(id="resend")
    dag.step("a", "echo", 1)
    await dag.submit(wf)  # dispatched: running, attempt 0; its message is never run
    enq._fail = lambda env, _mid: PayloadTooLarge("encodes to 2000000 bytes", size=2_000_000)
    async with running(wf):
        for _ in range(250):
            if (await store.get_meta("resend"))[0].status.terminal:
                break
            await asyncio.sleep(0.02)
    rec, _ = await store.get_step("resend", "a")
    assert (rec.status, rec.error_kind) == (StepStatus.FAILED, "encode")
    assert (await store.get_meta("resend"))[0].status is DAGStatus.FAILED
    await bus.close()


async def test_a_step_dispatched_while_pause_fences_it_keeps_the_dag_pausing() -> None:
    class DispatchFirst(MemStore):
        """The scheduler's dispatch CAS lands just before the pause's hold CAS."""

        raced = False

        async def put_step(self, dag_id: str, step_id: str, rec: StepRecord, rev: int) -> int:
            if rec.held and not self.raced:
                self.raced = True
                cur, cur_rev = await self.get_step(dag_id, step_id)
                running_rec = msgspec.structs.replace(cur, status=StepStatus.RUNNING)
                await super().put_step(dag_id, step_id, running_rec, cur_rev)
            return await super().put_step(dag_id, step_id, rec, rev)

    store = DispatchFirst()
    wf, _, bus, _ = make_wf(store=store)
    dag = DAG(id="race")
    dag.step("b", "echo", 2, wait_for_signals=["go"])  # pending: nothing runs at pause
    await dag.submit(wf)
    await wf.pause("race")
    meta, _ = await store.get_meta("race")
    assert meta.status is DAGStatus.PAUSING  # b now runs: not paused until it finishes
    recs = {r.step_id: r for r, _ in await store.list_steps("race")}
    assert recs["b"].status is StepStatus.RUNNING and not recs["b"].held
    await bus.close()


async def test_a_full_pass_between_pause_fencing_and_its_meta_write_does_not_undo_it() -> None:
    class Racy(MemStore):
        """Runs a scheduler pass just before pause writes its meta (after fencing)."""

        wf: Workflow | None = None
        fired = False

        async def put_meta(self, dag_id: str, meta: DAGMeta, rev: int) -> int:
            if meta.status in (DAGStatus.PAUSED, DAGStatus.PAUSING) and not self.fired:
                self.fired = True
                assert self.wf is not None
                await self.wf.engine.advance(await self.wf.engine.load(dag_id))
            return await super().put_meta(dag_id, meta, rev)

    store = Racy()
    wf, _, bus, enq = make_wf(store=store)
    store.wf = wf
    w = SimWorker(wf, enq, HANDLERS)
    dag = DAG(id="race2")
    a = dag.step("a", "echo", 1)
    dag.step("b", "echo", 2, after=[a])
    await dag.submit(wf)
    await w.pump()  # a done; with no scheduler running, b stays pending
    await wf.pause("race2")
    meta, _ = await store.get_meta("race2")
    b = {r.step_id: r for r, _ in await store.list_steps("race2")}["b"]
    # Either the pass lost (b held, paused) or it won and pause saw b running (pausing).
    assert (meta.status, b.status, b.held) in {
        (DAGStatus.PAUSED, StepStatus.PENDING, True),
        (DAGStatus.PAUSING, StepStatus.RUNNING, False),
    }
    await bus.close()
