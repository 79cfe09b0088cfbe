"""A worker proves the steps its own process dispatched from what the dispatch wrote.

The engine notes each dispatch (generation, digest) before it sends it and settles the
note with the record and revision its CAS wrote. The first delivery of that message in the
same process, within the window, starts from them without reading the step record; every
other delivery (another digest, a redelivery, a late one, a dispatch whose CAS lost) reads
the record and is judged by it exactly as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
from simworker import SimWorker, make_wf, running
from simworker import wait_for as _wait_for

from ebind.errors import StaleRevision
from ebind.worker.hook import StepUnproven
from ebind.workflow import DAG, DAGStatus, StepStatus, control
from ebind.workflow.local import LocalDispatches
from ebind.workflow.snapshot import Snapshot
from ebind.workflow.store_mem import MemStore
from ebind.workflow.types import DAGMeta, StepRecord


class GateStore(MemStore):
    """Holds dispatch CASes (pending to running, attempt 0) while ``gate`` is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Event | None = None

    async def put_step(self, dag_id: str, step_id: str, rec: StepRecord, expected_rev: int) -> int:
        gate = self.gate
        if gate is not None and rec.status is StepStatus.RUNNING and rec.attempt == 0:
            await gate.wait()
        return await super().put_step(dag_id, step_id, rec, expected_rev)


class Reads:
    """Counts the step-start reads of a hook."""

    def __init__(self, hook: Any) -> None:
        self.n = 0
        inner = hook._read_start

        async def counted(env: Any) -> Any:
            self.n += 1
            return await inner(env)

        hook._read_start = counted


def _live(env: object, attempt: int = 1) -> object:
    return msgspec.structs.replace(env, attempt=attempt, worker_id="w1")  # type: ignore[type-var]


async def test_the_first_delivery_of_a_local_dispatch_starts_without_a_read() -> None:
    store = GateStore()
    wf, _, bus, enq = make_wf(store=store)
    wf.local.window = 5.0  # within the window however slow a loaded host runs the steps
    w = SimWorker(wf, enq, {"inc": lambda _ctx, x: x + 1})
    reads = Reads(w.hook)
    dag = DAG(id="l1")
    a = dag.step("a", "inc", 1)
    b = dag.step("b", "inc", a.ref())
    dag.step("c", "inc", b.ref())
    async with running(wf):
        await dag.submit(wf)
        assert await w.run_until_terminal("l1") is DAGStatus.DONE
    assert reads.n == 0  # every step was dispatched here and delivered at once
    recs = {r.step_id: r for r, _ in await store.list_steps("l1")}
    assert all(r.status is StepStatus.DONE and r.worker_id == "w1" for r in recs.values())
    assert msgspec.json.decode(await store.get_result("l1", "c", recs["c"].run_id)) == 4
    assert len(wf.local) == 0  # each note was used up by its delivery
    await bus.close()


async def test_an_altered_message_with_the_dispatch_generation_is_read_and_refused() -> None:
    store = GateStore()
    wf, _, bus, enq = make_wf(store=store)
    w = SimWorker(wf, enq, {"inc": lambda _ctx, x: x + 1})
    reads = Reads(w.hook)
    dag = DAG(id="l2")
    dag.step("a", "inc", 1)
    await dag.submit(wf)
    (env,) = w.take_new()
    forged = msgspec.structs.replace(_live(env), payload=msgspec.Raw(b"[41]"))
    with pytest.raises(StepUnproven, match="differs from the envelope dispatched"):
        await w.hook.on_step_started(forged)
    assert reads.n == 1
    # The note was used up by the forged delivery: the real one is proven by the read.
    assert await w.hook.on_step_started(_live(env))
    assert reads.n == 2
    await bus.close()


async def test_a_redelivery_reads_the_record() -> None:
    store = GateStore()
    wf, _, bus, enq = make_wf(store=store)
    w = SimWorker(wf, enq, {"inc": lambda _ctx, x: x + 1})
    reads = Reads(w.hook)
    dag = DAG(id="l3")
    dag.step("a", "inc", 1)
    await dag.submit(wf)
    (env,) = w.take_new()
    assert await w.hook.on_step_started(_live(env))
    assert reads.n == 0
    await w.finish(_live(env))  # done
    # The same message again (a redelivery, or a copy on attempt 1): read, and dropped.
    assert not await w.hook.on_step_started(_live(env, attempt=2))
    assert not await w.hook.on_step_started(_live(env))
    assert reads.n == 2
    assert w.executions == {"l3:a": 1}
    await bus.close()


async def test_a_delivery_after_the_window_reads_and_sees_a_cancel() -> None:
    store = GateStore()
    wf, _, bus, enq = make_wf(store=store)
    wf.local.window = 0.02
    w = SimWorker(wf, enq, {"inc": lambda _ctx, x: x + 1})
    reads = Reads(w.hook)
    dag = DAG(id="l4")
    dag.step("a", "inc", 1)
    await dag.submit(wf)
    await wf.cancel("l4")
    await asyncio.sleep(0.05)
    (env,) = w.take_new()
    assert not await w.hook.on_step_started(_live(env))
    assert reads.n == 1
    assert (await store.get_step("l4", "a"))[0].status is StepStatus.CANCELED
    await bus.close()


async def test_a_cancel_within_the_window_finds_the_step_already_started() -> None:
    # Within the window the delivery is treated as if it had read the record before the
    # cancel landed: the step runs, as a started step does ("running ones may finish").
    store = GateStore()
    wf, _, bus, enq = make_wf(store=store)
    w = SimWorker(wf, enq, {"inc": lambda _ctx, x: x + 1})
    reads = Reads(w.hook)
    dag = DAG(id="l5")
    dag.step("a", "inc", 1)
    await dag.submit(wf)
    await wf.cancel("l5")
    (env,) = w.take_new()
    assert await w.hook.on_step_started(_live(env))
    assert reads.n == 0
    await bus.close()


async def test_a_dispatch_whose_cas_lost_is_not_proven_locally() -> None:
    class PauseFirst(GateStore):
        armed = True

        async def put_step(
            self, dag_id: str, step_id: str, rec: StepRecord, expected_rev: int
        ) -> int:
            if self.armed and rec.status is StepStatus.RUNNING and rec.attempt == 0:
                self.armed = False
                await control.pause(self, dag_id)  # fences the record: the CAS loses
            return await super().put_step(dag_id, step_id, rec, expected_rev)

    store = PauseFirst()
    wf, _, bus, enq = make_wf(store=store)
    w = SimWorker(wf, enq, {"inc": lambda _ctx, x: x + 1})
    reads = Reads(w.hook)
    dag = DAG(id="l6")
    dag.step("a", "inc", 1)
    with contextlib.suppress(StaleRevision):
        await dag.submit(wf)
    (env,) = w.take_new()
    assert not await w.hook.on_step_started(_live(env))  # stale: dropped, nothing runs
    assert reads.n == 1
    rec, _ = await store.get_step("l6", "a")
    assert rec.status is StepStatus.PENDING and rec.held
    await bus.close()


async def test_a_message_ahead_of_its_dispatch_cas_waits_for_it_then_runs() -> None:
    store = GateStore()
    store.gate = asyncio.Event()
    wf, _, bus, enq = make_wf(store=store)
    wf.local.window = 5.0
    w = SimWorker(wf, enq, {"inc": lambda _ctx, x: x + 1})
    reads = Reads(w.hook)
    dag = DAG(id="l7")
    dag.step("a", "inc", 1)
    submit = asyncio.create_task(dag.submit(wf))
    await _wait_for(lambda: enq.envelopes)
    (env,) = w.take_new()
    start = asyncio.create_task(w.hook.on_step_started(_live(env)))
    await asyncio.sleep(0.02)
    assert not start.done()  # the CAS is not acknowledged yet
    store.gate.set()
    assert await start
    await submit
    assert reads.n == 0
    await bus.close()


async def test_a_cas_that_never_lands_within_the_window_falls_back_to_the_read() -> None:
    store = GateStore()
    store.gate = asyncio.Event()
    wf, _, bus, enq = make_wf(store=store, start_write_delay=0)
    wf.local.window = 0.02
    w = SimWorker(wf, enq, {"inc": lambda _ctx, x: x + 1})
    reads = Reads(w.hook)
    dag = DAG(id="l8")
    dag.step("a", "inc", 1)
    async with running(wf):
        submit = asyncio.create_task(dag.submit(wf))
        await _wait_for(lambda: enq.envelopes)
        (env,) = w.take_new()
        with pytest.raises(StaleRevision):  # read: the dispatch does not show; nak'd
            await w.hook.on_step_started(_live(env))
        assert reads.n >= 1
        store.gate.set()
        await submit
    await bus.close()


async def test_notes_expire_and_are_bounded() -> None:
    local = LocalDispatches(window=10.0, limit=3)
    for i in range(5):
        local.expect("d", f"s{i}", i, "x")
    assert len(local) == 3
    assert await local.proof("d", "s0", 0, "x") is None  # dropped for the limit
    e = local.expect("d", "s9", 9, "x")
    LocalDispatches.settle(e, None)  # the CAS failed
    assert await local.proof("d", "s9", 9, "x") is None
    stale = LocalDispatches(window=0.0)
    e = stale.expect("d", "a", 1, "x")
    LocalDispatches.settle(
        e, (StepRecord(dag_id="d", step_id="a", fn_name="f", status=StepStatus.RUNNING), 2)
    )
    assert await stale.proof("d", "a", 1, "x") is None


class ReadLog(MemStore):
    """Records the step ids of every batched read and counts meta reads."""

    def __init__(self) -> None:
        super().__init__()
        self.batched: list[list[str]] = []
        self.metas = 0

    async def read_dag(
        self,
        dag_id: str,
        step_ids: Sequence[str],
        result_ids: Sequence[str] = (),
        run_id: str = "",
    ) -> Snapshot:
        self.batched.append([*step_ids, *(f"result:{r}" for r in result_ids)])
        return await super().read_dag(dag_id, step_ids, result_ids, run_id)

    async def get_meta(self, dag_id: str) -> tuple[DAGMeta, int]:
        self.metas += 1
        return await super().get_meta(dag_id)


async def test_a_pass_on_a_step_finished_here_reads_only_the_meta() -> None:
    store = ReadLog()
    wf, _, bus, enq = make_wf(store=store)
    w = SimWorker(wf, enq, {"inc": lambda _ctx, x: x + 1})
    dag = DAG(id="f1")
    a = dag.step("a", "inc", 1)
    b = dag.step("b", "inc", a.ref())
    dag.step("c", "inc", b.ref())
    async with running(wf):
        await dag.submit(wf)
        assert await w.run_until_terminal("f1") is DAGStatus.DONE
    # No step record or result was read back: the worker's starts used the dispatches'
    # notes, the passes the completions' notes (the first pass lists the DAG once).
    assert store.batched == [], store.batched
    recs = {r.step_id: r for r, _ in await store.list_steps("f1")}
    assert msgspec.json.decode(await store.get_result("f1", "c", recs["c"].run_id)) == 4
    await bus.close()


async def test_a_failed_step_is_read_back_by_the_pass() -> None:
    # retry can put a failed step back to pending, so the pass must see the store.
    def boom(_ctx: object, x: int) -> int:
        raise RuntimeError("no")

    store = ReadLog()
    wf, _, bus, enq = make_wf(store=store)
    w = SimWorker(wf, enq, {"inc": lambda _ctx, x: x + 1, "boom": boom})
    dag = DAG(id="f2")
    a = dag.step("a", "inc", 1)
    b = dag.step("b", "boom", a.ref())
    dag.step("c", "inc", b.ref())
    async with running(wf):
        await dag.submit(wf)
        assert await w.run_until_terminal("f2") is DAGStatus.FAILED
    assert ["b"] in store.batched
    recs = {r.step_id: r.status for r, _ in await store.list_steps("f2")}
    assert recs == {"a": StepStatus.DONE, "b": StepStatus.FAILED, "c": StepStatus.SKIPPED}
    await bus.close()


async def test_a_result_kept_from_an_earlier_owner_is_read_not_the_one_computed_here() -> None:
    class Keep(MemStore):
        async def put_result(
            self, dag_id: str, step_id: str, data: bytes, run_id: str = ""
        ) -> None:
            if step_id == "a":  # an earlier owner stored another value first
                with contextlib.suppress(StaleRevision):
                    await super().put_result(dag_id, step_id, b"41", run_id)
            await super().put_result(dag_id, step_id, data, run_id)

    store = Keep()
    wf, _, bus, enq = make_wf(store=store)
    w = SimWorker(wf, enq, {"inc": lambda _ctx, x: x + 1})
    dag = DAG(id="f3")
    a = dag.step("a", "inc", 1)
    dag.step("b", "inc", a.ref())
    async with running(wf):
        await dag.submit(wf)
        assert await w.run_until_terminal("f3") is DAGStatus.DONE
    recs = {r.step_id: r for r, _ in await store.list_steps("f3")}
    assert msgspec.json.decode(await store.get_result("f3", "b", recs["b"].run_id)) == 42
    await bus.close()


def test_finished_notes_match_the_attempt_and_expire() -> None:
    rec = StepRecord(dag_id="d", step_id="a", fn_name="f", status=StepStatus.DONE, attempt=2)
    local = LocalDispatches(window=10.0, limit=2)
    local.finished(rec, 7, b"1")
    assert local.take_finished("d", "a", 1) is None  # another attempt; used up
    assert local.take_finished("d", "a", 2) is None
    local.finished(rec, 7, b"1")
    got = local.take_finished("d", "a", 2)
    assert got is not None and (got.rec, got.rev, got.result, got.meta) == (rec, 7, b"1", None)
    for sid in ("x", "y", "z"):
        local.finished(msgspec.structs.replace(rec, step_id=sid), 1, b"1")
    assert local.take_finished("d", "x", 2) is None  # dropped for the limit
    stale = LocalDispatches(window=0.0)
    stale.finished(rec, 7, b"1")
    assert stale.take_finished("d", "a", 2) is None


def hold_events(wf: Any) -> asyncio.Event:
    """Hold every event's delivery to ``wf``'s scheduler until the returned event is set."""
    release = asyncio.Event()
    inner = wf.scheduler.on_event

    async def held(ev: Any, delivery: Any) -> None:
        await release.wait()
        await inner(ev, delivery)

    wf.scheduler.on_event = held
    return release


class Passes:
    """Counts the scheduler's evaluations."""

    def __init__(self, wf: Any) -> None:
        self.n = 0
        inner = wf.scheduler.evaluate

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.n += 1
            return await inner(*args, **kwargs)

        wf.scheduler.evaluate = counted


async def test_the_leader_advances_from_its_own_workers_completion_without_the_event() -> None:
    store = ReadLog()
    wf, _, bus, enq = make_wf(store=store, sweep_interval=60)
    w = SimWorker(wf, enq, {"inc": lambda _ctx, x: x + 1})
    passes = Passes(wf)
    release = hold_events(wf)
    dag = DAG(id="adv1")
    a = dag.step("a", "inc", 1)
    b = dag.step("b", "inc", a.ref())
    dag.step("c", "inc", b.ref())
    async with running(wf):
        await dag.submit(wf)
        # No completion event has reached the scheduler, and the DAG still finished: each
        # pass started from the worker's completion, with the meta read sent beside it.
        assert await w.run_until_terminal("adv1") is DAGStatus.DONE
        assert store.batched == [], store.batched
        done = passes.n
        assert done == 3
        release.set()
        await _wait_for(lambda: not bus.pending)
        # The three events came and were acked without another pass.
        assert passes.n == done
    recs = {r.step_id: r for r, _ in await store.list_steps("adv1")}
    assert msgspec.json.decode(await store.get_result("adv1", "c", recs["c"].run_id)) == 4
    await bus.close()


async def test_a_failed_local_pass_leaves_the_completion_to_its_event() -> None:
    class LoseOnce(MemStore):
        def __init__(self) -> None:
            super().__init__()
            self.lost = False

        async def put_step(
            self, dag_id: str, step_id: str, rec: StepRecord, expected_rev: int
        ) -> int:
            if step_id == "b" and rec.status is StepStatus.RUNNING and not self.lost:
                self.lost = True  # the first dispatch of b loses its CAS: that pass fails
                raise StaleRevision(dag_id=dag_id, step_id=step_id)
            return await super().put_step(dag_id, step_id, rec, expected_rev)

    store = LoseOnce()
    wf, _, bus, enq = make_wf(store=store, sweep_interval=60)
    w = SimWorker(wf, enq, {"inc": lambda _ctx, x: x + 1})
    dag = DAG(id="adv2")
    a = dag.step("a", "inc", 1)
    dag.step("b", "inc", a.ref())
    async with running(wf):
        await dag.submit(wf)
        assert await w.run_until_terminal("adv2") is DAGStatus.DONE
    assert store.lost
    await bus.close()


def test_advanced_notes_are_used_once_and_match_the_attempt() -> None:
    local = LocalDispatches(window=10.0, limit=2)
    assert not local.leading
    seen: list[tuple[str, str, int]] = []
    local.on_finished = lambda d, s, a: seen.append((d, s, a))
    assert local.leading
    rec = StepRecord(dag_id="d", step_id="a", fn_name="f", status=StepStatus.DONE, attempt=2)
    local.finished(rec, 7, b"1")
    assert seen == [("d", "a", 2)]
    local.advanced("d", "a", 2)
    assert not local.take_advanced("d", "a", 1)  # another attempt (a forged or older event)
    assert local.take_advanced("d", "a", 2)
    assert not local.take_advanced("d", "a", 2)  # used up: a republished event gets a pass
    for sid in ("x", "y", "z"):
        local.advanced("d", sid, 1)
    assert not local.take_advanced("d", "x", 1)  # dropped for the limit
    stale = LocalDispatches(window=0.0)
    stale.advanced("d", "a", 2)
    assert not stale.take_advanced("d", "a", 2)


async def test_an_event_that_overtakes_the_workers_cas_waits_for_it_instead_of_reading() -> None:
    class SlowDone(ReadLog):
        async def put_step(
            self, dag_id: str, step_id: str, rec: StepRecord, expected_rev: int
        ) -> int:
            if rec.status is StepStatus.DONE:
                await asyncio.sleep(0.02)  # the event (published beside it) arrives first
            return await super().put_step(dag_id, step_id, rec, expected_rev)

    store = SlowDone()
    wf, _, bus, enq = make_wf(store=store, sweep_interval=60)
    w = SimWorker(wf, enq, {"inc": lambda _ctx, x: x + 1})
    passes = Passes(wf)
    dag = DAG(id="adv3")
    a = dag.step("a", "inc", 1)
    b = dag.step("b", "inc", a.ref())
    dag.step("c", "inc", b.ref())
    async with running(wf):
        await dag.submit(wf)
        assert await w.run_until_terminal("adv3") is DAGStatus.DONE
        await _wait_for(lambda: not bus.pending)
    # Each event's pass waited for the worker's note rather than reading the step back
    # (which would not have shown it done yet); the worker's own hand-over then found
    # the pass made: one pass per completion.
    assert store.batched == [], store.batched
    assert passes.n == 3
    await bus.close()


async def test_completions_of_one_dag_share_the_meta_read_in_flight() -> None:
    local = LocalDispatches()
    assert local.meta_reading("d") is None
    fut: asyncio.Future[tuple[DAGMeta, int]] = asyncio.get_running_loop().create_future()
    local.reading_meta("d", fut)
    assert local.meta_reading("d") is fut
    assert local.meta_reading("other") is None  # another DAG reads its own meta
    fut.set_result((DAGMeta(id="d", status=DAGStatus.RUNNING), 3))
    await asyncio.sleep(0)
    assert local.meta_reading("d") is None  # answered: the next completion reads anew


class Recorded:
    """A delivery that records how it was settled; the settle named by ``fails`` raises."""

    def __init__(self, fails: str = "") -> None:
        self.fails = fails
        self.settled: list[str] = []

    async def _settle(self, how: str) -> None:
        if how == self.fails:
            raise ConnectionError("connection closed")
        self.settled.append(how)

    async def ack(self) -> None:
        await self._settle("ack")

    async def nak(self, delay: float | None = None) -> None:
        await self._settle("nak")

    async def term(self) -> None:
        await self._settle("term")


async def test_an_answered_event_whose_ack_fails_drops_nothing_else_of_its_batch() -> None:
    from ebind.workflow.events import Event, EventKind

    wf, _, bus, _ = make_wf(sweep_interval=60)
    wf.hook()  # a worker in this process: its completions are noted here
    dag = DAG(id="ackfail")
    dag.step("a", "inc", 1)
    dag.step("b", "inc", 2)
    async with running(wf):
        await dag.submit(wf)
        await _wait_for(wf.elector.is_leader)
        sched, local = wf.scheduler, wf.local
        # a's completion was already advanced from this process's worker; its event is
        # answered without a pass, and its ack fails (the connection just went away).
        local.advanced("ackfail", "a", 1)
        answered, other = Recorded(fails="ack"), Recorded()
        done = Event(kind=EventKind.COMPLETED, dag_id="ackfail", status=StepStatus.DONE)
        sched._enqueue(
            "ackfail", msgspec.structs.replace(done, step_id="a", attempt=1), answered, sweep=False
        )
        sched._enqueue(
            "ackfail", msgspec.structs.replace(done, step_id="b", attempt=1), other, sweep=False
        )
        # b's event, queued in the same batch, still gets its pass and is settled.
        await _wait_for(lambda: other.settled)
    await bus.close()


async def test_a_failed_pass_whose_settle_fails_still_settles_the_rest_of_its_batch() -> None:
    from ebind.workflow.events import Event, EventKind

    wf, _, _, _ = make_wf(sweep_interval=60)
    broken, other, waiter = Recorded(fails="nak"), Recorded(), Recorded()
    done = Event(kind=EventKind.COMPLETED, dag_id="d", status=StepStatus.DONE)
    batch: list[tuple[Event | None, Any]] = [
        (msgspec.structs.replace(done, step_id="a", attempt=1), broken),
        (msgspec.structs.replace(done, step_id="b", attempt=1), other),
        (None, waiter),  # a sweep's waiter
    ]
    await wf.scheduler._failed("d", batch, RuntimeError("store unreachable"))
    assert broken.settled == []  # its nak raised: the server redelivers it after its ack wait
    assert other.settled == ["nak"]
    assert waiter.settled == ["nak"]
