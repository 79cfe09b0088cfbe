"""The sweep's re-sends over MemStore / MemBus / CaptureEnqueuer (the worker is simulated)."""

from __future__ import annotations

import asyncio
import itertools
import time

from simworker import SimWorker, make_wf, running
from simworker import wait_for as _until

from ebind import observe
from ebind.workflow import DAG, CaptureEnqueuer, DAGStatus, StepStatus

INC = {"inc": lambda _ctx, x: x + 1}


async def test_queued_messages_are_left_alone_and_a_lost_one_is_resent_once() -> None:
    enq = CaptureEnqueuer()
    wf, store, bus, enq = make_wf(enq=enq, presence=enq, redispatch_after=0.1, start_write_delay=0)
    w = SimWorker(wf, enq, INC)
    dag = DAG(id="r1")
    for i in range(5):
        dag.step(f"s{i}", "inc", i)
    await dag.submit(wf)
    seen: list[str] = []
    unsubscribe = observe.subscribe(
        lambda ev, f: seen.append(str(f["reason"])) if ev == observe.STEP_REDISPATCHED else None
    )
    try:
        async with running(wf):
            start = wf.scheduler.sweeps
            # five sweeps, far past redispatch_after
            await _until(lambda: wf.scheduler.sweeps >= start + 5, limit=5.0)
            assert len(enq.calls) == 5 and wf.scheduler.redispatches == 0
            lost = next(mid for env, mid in enq.calls if env.step_id == "s3")
            enq.lose(lost)
            await _until(lambda: len(enq.calls) == 6, limit=5.0)
            start = wf.scheduler.sweeps
            await _until(lambda: wf.scheduler.sweeps >= start + 5, limit=5.0)
            assert len(enq.calls) == 6  # the re-sent copy is queued: left alone too
            resent, mid = enq.calls[5]
            assert resent.step_id == "s3" and mid != lost
            rec, _ = await store.get_step("r1", "s3")
            assert rec.redispatches == 1 and rec.dispatch_seq == 6
            assert mid == f"r1:s3:{rec.generation}"
            assert await w.run_until_terminal("r1") is DAGStatus.DONE
    finally:
        unsubscribe()
    assert seen == ["lost"]
    assert w.executions == {f"r1:s{i}": 1 for i in range(5)}
    await bus.close()


async def test_successive_resends_of_one_step_back_off_up_to_the_cap() -> None:
    # No look-up is possible: every re-send is blind, so only the backoff bounds them.
    wf, store, bus, enq = make_wf(redispatch_after=0.2, redispatch_cap=0.8, start_write_delay=0)
    dag = DAG(id="r2")
    dag.step("a", "inc", 1)
    await dag.submit(wf)
    times: list[float] = []
    unsubscribe = observe.subscribe(
        lambda ev, _f: times.append(time.monotonic()) if ev == observe.STEP_REDISPATCHED else None
    )
    try:
        async with running(wf):
            await _until(lambda: len(times) >= 5, limit=8.0)
    finally:
        unsubscribe()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # After the first re-send: 0.4, then the cap 0.8, plus up to a sweep interval (0.1).
    assert 0.35 <= gaps[0] <= 0.65, gaps
    assert all(0.75 <= g <= 1.2 for g in gaps[1:4]), gaps
    rec, _ = await store.get_step("r2", "a")
    assert rec.status is StepStatus.RUNNING and rec.redispatches >= 5
    assert len({mid for _, mid in enq.calls}) == len(enq.calls)  # each a new generation
    await bus.close()


async def test_an_orphaned_step_counts_as_a_resend_with_its_reason() -> None:
    enq = CaptureEnqueuer()
    wf, store, bus, enq = make_wf(enq=enq, presence=enq, start_write_delay=0)
    w = SimWorker(wf, enq, INC)
    dag = DAG(id="r3")
    dag.step("a", "inc", 1)
    await dag.submit(wf)
    reasons: list[str] = []
    unsubscribe = observe.subscribe(
        lambda ev, f: reasons.append(str(f["reason"])) if ev == observe.STEP_REDISPATCHED else None
    )
    try:
        env = w.take_new()[0]
        async with running(wf):
            await w.deliver(env, worker_id="gone", run=False)  # started; its worker vanishes
            assert wf.liveness is not None
            await asyncio.sleep(0.05)
            wf.liveness.forget("gone")  # type: ignore[attr-defined]
            wf.hook()._tracker.running.pop("gone", None)
            await _until(lambda: len(enq.envelopes) == 2, limit=5.0)
            rec, _ = await store.get_step("r3", "a")
            assert rec.attempt == 0 and rec.redispatches == 1 and rec.dispatch_seq == 2
            assert await w.run_until_terminal("r3") is DAGStatus.DONE
    finally:
        unsubscribe()
    assert reasons == ["orphaned"]
    await bus.close()


async def test_a_new_leader_checks_a_resent_step_by_the_sequence_in_its_record() -> None:
    enq = CaptureEnqueuer()
    wf, store, bus, enq = make_wf(enq=enq, presence=enq, redispatch_after=0.1, start_write_delay=0)
    dag = DAG(id="r4")
    dag.step("a", "inc", 1)
    dag.step("b", "inc", 2)
    await dag.submit(wf)
    async with running(wf):
        enq.lose(next(mid for env, mid in enq.calls if env.step_id == "a"))
        await _until(lambda: len(enq.calls) == 3, limit=5.0)
        # A new leader: nothing in memory, only what the records hold.
        for sid in ("a", "b"):
            wf.engine.sent.forget("r4", sid)
        start = wf.scheduler.sweeps
        await _until(lambda: wf.scheduler.sweeps >= start + 5, limit=5.0)
    steps = [env.step_id for env, _ in enq.calls]
    assert steps.count("a") == 2  # checked through its record's dispatch_seq: no publish
    assert steps.count("b") == 2 and enq.duplicates == 1  # probed once, stored nothing
    rec, _ = await store.get_step("r4", "a")
    assert rec.dispatch_seq == 3 and rec.redispatches == 1
    await bus.close()


class FinishedMeanwhile:
    """The stream's answer arrives after the worker finished the step and acked it."""

    def __init__(self, worker: SimWorker) -> None:
        self.worker = worker
        self.asked = 0

    async def present(self, seq: int, expected_msg_id: str) -> bool:
        self.asked += 1
        await self.worker.pump()  # runs the step: outcome written, then the message acked
        return False


async def test_a_step_that_finishes_while_the_sweep_looks_is_not_resent() -> None:
    enq = CaptureEnqueuer()
    wf, _, bus, enq = make_wf(enq=enq, redispatch_after=0.1, start_write_delay=1.0)
    w = SimWorker(wf, enq, INC)
    wf.scheduler.presence = presence = FinishedMeanwhile(w)
    dag = DAG(id="r5")
    dag.step("a", "inc", 1)
    await dag.submit(wf)
    async with running(wf):
        await _until(lambda: presence.asked >= 1, limit=5.0)
        assert await w.run_until_terminal("r5") is DAGStatus.DONE
    assert len(enq.calls) == 1 and wf.scheduler.redispatches == 0
    assert w.executions == {"r5:a": 1}
    await bus.close()
