"""Dispatch sends the ``running`` CAS and the task message together (one round trip).

A worker may therefore read the step before the dispatch's write lands. The generation is
the revision the dispatch was written from, so the worker can tell "not landed yet"
(re-read until it shows: only the digest it writes proves the message), "read from
behind" (read again) and "stale" (drop) apart, and a dispatch whose CAS lost never shares
a msg-id with a later one.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
import pytest
from simworker import SimWorker, make_wf, running
from simworker import wait_for as _wait_for

from ebind.errors import StaleRevision
from ebind.worker.hook import StepUnproven
from ebind.workflow import (
    DAG,
    CaptureEnqueuer,
    DAGStatus,
    MemBus,
    StepStatus,
    Workflow,
    control,
)
from ebind.workflow.hook import PROOF_DELIVERIES
from ebind.workflow.proof import dispatch_digest
from ebind.workflow.store_mem import MemStore
from ebind.workflow.types import StepRecord


def _gen(env: object) -> int:
    return int(env.trace_ctx["ebind-generation"])  # type: ignore[attr-defined]


class GatedDispatchStore(MemStore):
    """Holds every dispatch CAS (pending → running, attempt 0) until ``gate`` opens."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.held = 0

    async def put_step(self, dag_id: str, step_id: str, rec: StepRecord, expected_rev: int) -> int:
        if rec.status is StepStatus.RUNNING and rec.attempt == 0 and not self.gate.is_set():
            self.held += 1
            await self.gate.wait()
        return await super().put_step(dag_id, step_id, rec, expected_rev)


async def test_a_message_that_outruns_its_dispatch_write_waits_for_it_and_runs_once() -> None:
    store = GatedDispatchStore()
    wf, _, bus, enq = make_wf(store=store, start_write_delay=0)
    w = SimWorker(wf, enq, {"inc": lambda _ctx, x: x + 1})
    dag = DAG(id="p1")
    a = dag.step("a", "inc", 1)
    dag.step("b", "inc", a.ref())
    async with running(wf):
        submit = asyncio.create_task(dag.submit(wf))  # its dispatch CAS is held
        await _wait_for(lambda: enq.envelopes and store.held)
        env = w.take_new()[0]
        rec, rev = await store.get_step("p1", "a")
        assert rec.status is StepStatus.PENDING and _gen(env) == rev  # write not landed
        delivery = asyncio.create_task(w.deliver(env))
        await asyncio.sleep(0.05)
        assert not delivery.done() and w.executions["p1:a"] == 0  # waits, runs nothing
        store.gate.set()  # the dispatch's CAS lands: the re-read proves the message
        await delivery
        await submit
        rec, _ = await store.get_step("p1", "a")
        assert (rec.status, rec.generation, rec.worker_id) == (StepStatus.DONE, rev, "w1")
        assert await w.run_until_terminal("p1") is DAGStatus.DONE
    assert (
        msgspec.json.decode(
            await store.get_result("p1", "b", (await store.get_step("p1", "b"))[0].run_id)
        )
        == 3
    )
    assert w.executions == {"p1:a": 1, "p1:b": 1}
    await bus.close()


async def test_a_dispatch_write_that_never_shows_is_nakd_then_dead_lettered() -> None:
    store = GatedDispatchStore()
    wf, _, bus, enq = make_wf(store=store, start_write_delay=0)
    w = SimWorker(wf, enq, {"inc": lambda _ctx, x: x + 1})
    dag = DAG(id="p2")
    dag.step("a", "inc", 1)
    async with running(wf):
        submit = asyncio.create_task(dag.submit(wf))  # its dispatch CAS is held
        await _wait_for(lambda: enq.envelopes and store.held)
        env = w.take_new()[0]
        for attempt in range(1, PROOF_DELIVERIES):
            live = msgspec.structs.replace(env, attempt=attempt, worker_id="w1")
            with pytest.raises(StaleRevision):  # the worker naks it with a delay
                await wf.hook().on_step_started(live)
        last = msgspec.structs.replace(env, attempt=PROOF_DELIVERIES, worker_id="w1")
        with pytest.raises(StepUnproven, match="no dispatch at generation"):
            await wf.hook().on_step_started(last)
        rec, _ = await store.get_step("p2", "a")
        assert rec.status is StepStatus.PENDING  # the refused deliveries wrote nothing
        store.gate.set()  # the dispatch lands late; the sweep re-sends its message
        await submit
        assert await w.run_until_terminal("p2") is DAGStatus.DONE
    assert w.executions == {"p2:a": 1}
    await bus.close()


class PauseBeforeDispatchStore(MemStore):
    """Lets a pause fence the pending record just before the first dispatch CAS lands."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = True

    async def put_step(self, dag_id: str, step_id: str, rec: StepRecord, expected_rev: int) -> int:
        if self.armed and rec.status is StepStatus.RUNNING and rec.attempt == 0:
            self.armed = False
            await control.pause(self, dag_id)
        return await super().put_step(dag_id, step_id, rec, expected_rev)


async def test_a_pause_that_fences_the_step_before_its_dispatch_lands_drops_the_message() -> None:
    store = PauseBeforeDispatchStore()
    wf, _, bus, enq = make_wf(store=store, start_write_delay=0.5)
    w = SimWorker(wf, enq, {"inc": lambda _ctx, x: x + 1})
    dag = DAG(id="p6")
    dag.step("a", "inc", 1)
    with contextlib.suppress(StaleRevision):
        await dag.submit(wf)  # the dispatch's CAS loses to the pause's fence
    env = w.take_new()[0]
    live = msgspec.structs.replace(env, attempt=1, worker_id="w1")
    assert not await wf.hook().on_step_started(live)  # stale: dropped, nothing runs
    rec, _ = await store.get_step("p6", "a")
    assert rec.status is StepStatus.PENDING and rec.held
    async with running(wf):
        await wf.resume("p6")
        assert await w.run_until_terminal("p6") is DAGStatus.DONE
    assert w.executions == {"p6:a": 1}  # ran once, after the resume
    await bus.close()


async def test_a_message_whose_dispatch_lost_its_cas_is_dropped_and_redispatched() -> None:
    wf, store, bus, enq = make_wf(start_write_delay=0)
    w = SimWorker(wf, enq, {"inc": lambda _ctx, x: x + 1})
    dag = DAG(id="p3")
    a = dag.step("a", "inc", 1)
    dag.step("b", "inc", 2, after=[a])
    await dag.submit(wf)
    rec, rev = await store.get_step("p3", "b")
    assert rec.status is StepStatus.PENDING
    env = await wf.engine.build_envelope(await wf.engine.load("p3"), rec, rev)
    assert env is not None
    # Someone else writes the pending record first: a dispatch from ``rev`` is lost.
    await store.put_step("p3", "b", msgspec.structs.replace(rec, timeout=5.0), rev)
    live = msgspec.structs.replace(env, attempt=1, worker_id="w1")
    assert not await wf.hook().on_step_started(live)
    assert (await store.get_step("p3", "b"))[0].status is StepStatus.PENDING
    async with running(wf):
        assert await w.run_until_terminal("p3") is DAGStatus.DONE
    mids = [mid for _, mid in enq.calls]
    assert f"p3:b:{rev}" not in mids  # the real dispatch got a fresh msg-id
    assert w.executions == {"p3:a": 1, "p3:b": 1}
    await bus.close()


class LaggingStore(MemStore):
    """Serves the next ``lag`` step reads from a snapshot taken before the last write."""

    def __init__(self) -> None:
        super().__init__()
        self.lag = 0
        self.snapshot: tuple[StepRecord, int] | None = None
        self.reads = 0

    async def get_step(self, dag_id: str, step_id: str) -> tuple[StepRecord, int]:
        self.reads += 1
        if self.lag > 0 and self.snapshot is not None:
            self.lag -= 1
            return self.snapshot
        return await super().get_step(dag_id, step_id)


async def test_a_read_from_behind_the_dispatch_is_retried_not_dropped() -> None:
    store = LaggingStore()
    wf, _, bus, enq = make_wf(store=store, start_write_delay=0)
    dag = DAG(id="p4")
    dag.step("a", "inc", 1)  # dispatched at submit: running
    await dag.submit(wf)
    store.snapshot = await store.get_step("p4", "a")  # what a replica behind shows
    async with running(wf):
        await _wait_for(lambda: enq.envelopes)
        # The sweep-style new generation: the record moved on twice since the snapshot.
        rec, rev = await store.get_step("p4", "a")
        env = await wf.engine.build_envelope(await wf.engine.load("p4"), rec, rev)
        assert env is not None
        bumped = msgspec.structs.replace(
            rec, generation=rev, dispatch_digest=dispatch_digest(env), attempt=0
        )
        await store.put_step("p4", "a", bumped, rev)
        store.lag, store.reads = 2, 0
        live = msgspec.structs.replace(env, attempt=1, worker_id="w1")
        assert await wf.hook().on_step_started(live)
        assert store.reads == 3  # two reads from behind, then the current record
    await bus.close()


async def test_a_replica_that_never_catches_up_makes_the_start_fail_retryably() -> None:
    store = LaggingStore()
    wf, _, bus, _ = make_wf(store=store, start_write_delay=0)
    dag = DAG(id="p5")
    a = dag.step("a", "inc", 1)
    dag.step("b", "inc", 2, after=[a])
    await dag.submit(wf)
    rec, rev = await store.get_step("p5", "b")
    store.snapshot = (rec, rev)
    env = await wf.engine.build_envelope(await wf.engine.load("p5"), rec, rev + 7)
    assert env is not None
    store.lag = 1000
    live = msgspec.structs.replace(env, attempt=1, worker_id="w1")
    try:
        await wf.hook().on_step_started(live)
    except StaleRevision:
        pass  # the worker naks: a redelivery reads again
    else:
        raise AssertionError("a start against a record behind the message must not run")
    assert (await MemStore.get_step(store, "p5", "b"))[0].status is StepStatus.PENDING
    await wf.close()
    await bus.close()


async def test_a_message_for_a_step_deleted_under_its_dag_is_dropped_not_naked_forever() -> None:
    wf, store, bus, enq = make_wf(start_write_delay=0)
    dag = DAG(id="p7")
    dag.step("a", "inc", 1)
    await dag.submit(wf)
    env = enq.envelopes[0]
    await store.delete_step("p7", "a")  # a delete_dag interrupted before the meta
    live = msgspec.structs.replace(env, attempt=1, worker_id="w1")
    assert not await wf.hook().on_step_started(live)  # re-read a few times, then dropped
    await bus.close()


async def test_a_stale_message_of_a_canceled_dag_leaves_a_newer_generation_running() -> None:
    wf, store, bus, enq = make_wf(start_write_delay=0)
    dag = DAG(id="p8")
    dag.step("a", "inc", 1)
    await dag.submit(wf)
    old_env = enq.envelopes[0]
    rec, rev = await store.get_step("p8", "a")
    newer = msgspec.structs.replace(rec, generation=rev, attempt=1, worker_id="w2")
    await store.put_step("p8", "a", newer, rev)  # a rescue re-enqueued it; w2 runs it
    await wf.cancel("p8")
    stale = msgspec.structs.replace(old_env, attempt=2, worker_id="w1")
    assert not await wf.hook().on_step_started(stale)
    after, _ = await store.get_step("p8", "a")
    assert (after.status, after.worker_id) == (StepStatus.RUNNING, "w2")  # may finish
    await bus.close()


async def _one_step_submitted(dag_id: str) -> tuple[Workflow, MemStore, MemBus, CaptureEnqueuer]:
    """A one-step DAG dispatched at submit by another process: the leader has no sequence."""
    enq = CaptureEnqueuer()
    wf, store, bus, enq = make_wf(start_write_delay=0, redispatch_after=0.1, enq=enq, presence=enq)
    dag = DAG(id=dag_id)
    dag.step("a", "inc", 1)
    await dag.submit(wf)
    wf.engine.sent.forget(dag_id, "a")
    return wf, store, bus, enq


async def test_the_sweeps_probe_of_a_dispatch_keeps_its_generation_and_its_proof() -> None:
    wf, store, bus, enq = await _one_step_submitted("p9")
    w = SimWorker(wf, enq, {"inc": lambda _ctx, x: x + 1})
    first_env, first_mid = enq.calls[0]
    sweeps = wf.scheduler.sweeps
    async with running(wf):  # not delivered yet: the sweep learns its sequence, no more
        await _wait_for(lambda: len(enq.calls) > 1)
        resent, mid = enq.calls[1]
        rec, _ = await store.get_step("p9", "a")
        assert mid == first_mid and _gen(resent) == _gen(first_env) == rec.generation
        assert dispatch_digest(resent) == dispatch_digest(first_env) == rec.dispatch_digest
        await _wait_for(lambda: wf.scheduler.sweeps >= sweeps + 4)
        assert len(enq.calls) == 2 and enq.duplicates == 1  # queued: left alone
        assert wf.scheduler.redispatches == 0
        assert await w.run_until_terminal("p9") is DAGStatus.DONE
    assert w.executions == {"p9:a": 1}
    await bus.close()


async def test_a_dispatch_recorded_without_a_digest_is_resent_as_a_new_generation() -> None:
    wf, store, bus, enq = await _one_step_submitted("p10")
    w = SimWorker(wf, enq, {"inc": lambda _ctx, x: x + 1})
    old = w.take_new()[0]
    rec, rev = await store.get_step("p10", "a")
    # As written by a version that recorded no digest: its message proves nothing.
    await store.put_step("p10", "a", msgspec.structs.replace(rec, dispatch_digest=""), rev)
    with pytest.raises(StepUnproven, match="no dispatch digest"):
        await wf.hook().on_step_started(msgspec.structs.replace(old, attempt=1, worker_id="w1"))
    async with running(wf):
        await _wait_for(lambda: len(enq.envelopes) > 1)
        new = enq.envelopes[1]
        rec, _ = await store.get_step("p10", "a")
        assert _gen(new) == rec.generation > _gen(old)
        assert rec.dispatch_digest == dispatch_digest(new)
        assert not await wf.hook().on_step_started(  # the old message is now stale
            msgspec.structs.replace(old, attempt=2, worker_id="w1")
        )
        assert await w.run_until_terminal("p10") is DAGStatus.DONE
    assert w.executions == {"p10:a": 1}
    await bus.close()


class OrderingStore(MemStore):
    """Notes when each dispatch CAS (pending → running) has landed; can make one lose."""

    def __init__(self, events: list[tuple[str, str]], lose: str = "") -> None:
        super().__init__()
        self.events = events
        self.lose = lose

    async def put_step(self, dag_id: str, step_id: str, rec: StepRecord, expected_rev: int) -> int:
        dispatch = rec.status is StepStatus.RUNNING and rec.attempt == 0
        if dispatch and step_id == self.lose:
            raise StaleRevision("lost to another writer", dag_id=dag_id, step_id=step_id)
        rev = await super().put_step(dag_id, step_id, rec, expected_rev)
        if dispatch:
            self.events.append(("cas", step_id))
        return rev


class OrderingEnqueuer(CaptureEnqueuer):
    """Notes each message as it is handed over."""

    def __init__(self, events: list[tuple[str, str]]) -> None:
        super().__init__()
        self.events = events

    async def enqueue(self, envelope: Any, *, msg_id: str | None = None) -> Any:
        self.events.append(("msg", envelope.step_id))
        return await super().enqueue(envelope, msg_id=msg_id)


async def test_a_wide_fan_out_sends_each_message_after_its_dispatch_write_landed() -> None:
    events: list[tuple[str, str]] = []
    store = OrderingStore(events, lose="l7")
    wf, _, bus, enq = make_wf(store=store, enq=OrderingEnqueuer(events), start_write_delay=0)
    leaves = 3 * wf.engine._lane_count  # more ready at once than lanes
    dag = DAG(id="wide")
    for i in range(leaves):
        dag.step(f"l{i}", "inc", i)
    with contextlib.suppress(StaleRevision):
        await dag.submit(wf)  # l7's dispatch loses its CAS; the rest go out
    order = {ev: n for n, ev in enumerate(events)}
    sent = [sid for kind, sid in events if kind == "msg"]
    assert len(sent) == leaves - 1 and "l7" not in sent  # a lost CAS sends no message
    assert all(order[("cas", sid)] < order[("msg", sid)] for sid in sent)
    rec, _ = await store.get_step("wide", "l7")
    assert rec.status is StepStatus.PENDING  # left for the scheduler's sweep
    store.lose = ""
    async with running(wf):
        await _wait_for(lambda: "l7" in enq.step_ids())
    assert set(enq.step_ids()) == {f"l{i}" for i in range(leaves)}
    await bus.close()


async def test_a_narrow_dispatch_still_sends_record_and_message_together() -> None:
    events: list[tuple[str, str]] = []
    store = OrderingStore(events)
    wf, _, bus, _ = make_wf(store=store, enq=OrderingEnqueuer(events), start_write_delay=0)
    dag = DAG(id="narrow")
    dag.step("a", "inc", 1)
    await dag.submit(wf)
    # The message was handed over before the CAS's acknowledgement came back.
    assert events == [("msg", "a"), ("cas", "a")]
    await bus.close()
