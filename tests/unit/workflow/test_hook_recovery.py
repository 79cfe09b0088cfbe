"""The step hook settles half-landed writes on retry and redelivery."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from simworker import make_wf

from ebind.wire import TaskError
from ebind.worker.hook import StepFailedEarlier
from ebind.workflow import DAG, StepStatus
from ebind.workflow.hook import owns
from ebind.workflow.store_mem import MemStore
from ebind.workflow.types import Event, EventKind, StepRecord


class LostReplyStore(MemStore):
    """Applies the next N writes of one kind, then raises TimeoutError (reply lost)."""

    def __init__(self) -> None:
        super().__init__()
        self.lose: dict[str, int] = {}
        self.drop: dict[str, int] = {}

    def _should(self, table: dict[str, int], op: str) -> bool:
        if table.get(op, 0) > 0:
            table[op] -= 1
            return True
        return False

    async def put_step(self, dag_id: str, step_id: str, rec: StepRecord, expected_rev: int) -> int:
        if self._should(self.drop, "put_step"):
            raise TimeoutError("nats: timeout (not applied)")
        rev = await super().put_step(dag_id, step_id, rec, expected_rev)
        if rec.is_terminal() and self._should(self.lose, "put_step"):
            raise TimeoutError("nats: timeout (applied)")
        return rev

    async def put_result(self, dag_id: str, step_id: str, data: bytes, run_id: str = "") -> None:
        if self._should(self.drop, "put_result"):
            raise TimeoutError("nats: timeout (not applied)")
        await super().put_result(dag_id, step_id, data, run_id)


async def _one_step(store: MemStore, **options: Any) -> tuple[Any, Any, Any]:
    wf, _, bus, enq = make_wf(store=store, **options)
    dag = DAG(id="d")
    dag.step("a", "echo", 1)
    await dag.submit(wf)
    env = msgspec.structs.replace(enq.envelopes[0], attempt=1, worker_id="w1")
    return wf, bus, env


async def test_a_done_write_whose_reply_was_lost_is_settled_without_error() -> None:
    store = LostReplyStore()
    wf, bus, env = await _one_step(store, start_write_delay=0)
    hook = wf.hook()
    assert await hook.on_step_started(env)
    store.lose["put_step"] = 1
    await hook.on_step_done(env, b'"x"')  # re-reads, finds its own done record, republishes
    rec, _ = await store.get_step("d", "a")
    assert (rec.status, rec.attempt, rec.worker_id) == (StepStatus.DONE, 1, "w1")
    assert await store.get_result("d", "a", (await store.get_step("d", "a"))[0].run_id) == b'"x"'
    await wf.close()
    await bus.close()


async def test_a_timed_out_result_write_on_the_fast_path_is_retried_not_failed() -> None:
    store = LostReplyStore()
    wf, bus, env = await _one_step(store, start_write_delay=0.5)
    hook = wf.hook()
    assert await hook.on_step_started(env)
    store.drop["put_result"] = 1
    await hook.on_step_done(env, b'"x"')
    rec, _ = await store.get_step("d", "a")
    assert rec.status is StepStatus.DONE, rec.error_message
    assert await store.get_result("d", "a", (await store.get_step("d", "a"))[0].run_id) == b'"x"'
    await wf.close()
    await bus.close()


async def test_an_unknown_fast_path_outcome_is_settled_by_the_slow_path() -> None:
    store = LostReplyStore()
    wf, bus, env = await _one_step(store, start_write_delay=0.5)
    hook = wf.hook()
    assert await hook.on_step_started(env)
    store.drop["put_step"] = 1  # the fast CAS times out without landing
    await hook.on_step_done(env, b'"x"')
    rec, _ = await store.get_step("d", "a")
    assert (rec.status, rec.attempt) == (StepStatus.DONE, 1)
    assert await store.get_result("d", "a", (await store.get_step("d", "a"))[0].run_id) == b'"x"'
    await wf.close()
    await bus.close()


async def test_a_later_delivery_supersedes_an_earlier_attempt_but_not_the_reverse() -> None:
    store = LostReplyStore()
    wf, bus, env = await _one_step(store, start_write_delay=0)
    rec, _ = await store.get_step("d", "a")
    running = msgspec.structs.replace(rec, status=StepStatus.RUNNING, attempt=1, worker_id="w1")
    later = msgspec.structs.replace(env, attempt=2)
    assert owns(running, later)  # attempt 2's running write never landed
    assert owns(running, msgspec.structs.replace(later, worker_id="w2"))
    newer = msgspec.structs.replace(running, attempt=2, worker_id="w2")
    assert not owns(newer, env)  # attempt 1 is stale once attempt 2 is recorded
    assert not owns(newer, msgspec.structs.replace(env, attempt=2))  # same attempt, other worker
    gen = int(env.trace_ctx["ebind-generation"])
    other_gen = msgspec.structs.replace(running, generation=gen + 1)
    assert not owns(other_gen, later)  # a newer generation fences every older message
    await wf.close()
    await bus.close()


async def test_a_completion_whose_record_is_not_terminal_does_not_block_the_dag() -> None:
    wf, store, bus, enq = make_wf()
    dag = DAG(id="u")
    a = dag.step("a", "echo", 1)
    dag.step("b", "echo", a.ref())
    await dag.submit(wf)
    # A completion whose CAS never landed: the event exists, the record is still pending.
    bogus = Event(kind=EventKind.COMPLETED, dag_id="u", step_id="b", status=StepStatus.DONE)
    assert await wf.scheduler.evaluate("u", [bogus]) == [bogus]  # reported, not raised
    env = msgspec.structs.replace(enq.envelopes[0], attempt=1, worker_id="w1")
    hook = wf.hook()
    assert await hook.on_step_started(env)
    await hook.on_step_done(env, b"[1]")
    done = Event(kind=EventKind.COMPLETED, dag_id="u", step_id="a", status=StepStatus.DONE)
    # The same pass still advances the DAG on what the store shows: b is dispatched.
    assert await wf.scheduler.evaluate("u", [done, bogus]) == [bogus]
    assert (await store.get_step("u", "b"))[0].status is StepStatus.RUNNING
    await wf.close()
    await bus.close()


async def test_a_redelivery_of_the_dispatch_that_failed_the_step_asks_for_its_dead_letter() -> None:
    store = MemStore()
    wf, _, env = await _one_step(store, start_write_delay=0)
    hook = wf.hook()
    assert await hook.on_step_started(env)
    await hook.on_step_failed(env, TaskError(kind="error", message="boom"))
    again = msgspec.structs.replace(env, attempt=2)
    with pytest.raises(StepFailedEarlier) as info:
        await hook.on_step_started(again)
    assert info.value.error == TaskError(kind="error", message="boom")
    assert info.value.attempt == 1
    rec, _ = await store.get_step("d", "a")
    assert rec.status is StepStatus.FAILED  # the record is left as it was


async def test_a_redelivery_of_a_step_done_is_only_declined() -> None:
    store = MemStore()
    wf, _, env = await _one_step(store, start_write_delay=0)
    hook = wf.hook()
    assert await hook.on_step_started(env)
    await hook.on_step_done(env, b'"x"')
    assert not await hook.on_step_started(msgspec.structs.replace(env, attempt=2))


async def test_a_copy_of_the_failing_dispatch_is_declined_without_a_dead_letter() -> None:
    # A second message of the same dispatch (a sweep probe's re-send, or a byte-for-byte
    # copy from a producer) is not the delivery that failed the step: the dead letter was
    # that delivery's to store, and another entry would duplicate it.
    store = MemStore()
    wf, _, env = await _one_step(store, start_write_delay=0)
    hook = wf.hook()
    assert await hook.on_step_started(env)
    await hook.on_step_failed(env, TaskError(kind="error", message="boom"))
    copy = msgspec.structs.replace(env, worker_id="w2")  # a new message: delivery 1
    assert not await hook.on_step_started(copy)


class ResultRefusingStore(MemStore):
    async def put_result(self, dag_id: str, step_id: str, data: bytes, run_id: str = "") -> None:
        raise ValueError("value too large")


async def test_a_redelivery_after_a_result_store_failure_stores_no_dead_letter() -> None:
    # The delivery finished the handler and acked; the step failed because its result could
    # not be stored. No dead letter was due then, and a redelivery (a lost ack) adds none.
    store = ResultRefusingStore()
    wf, _, env = await _one_step(store)
    hook = wf.hook()
    assert await hook.on_step_started(env)
    await hook.on_step_done(env, b'"x"')
    rec, _ = await store.get_step("d", "a")
    assert (rec.status, rec.error_kind) == (StepStatus.FAILED, "result_store")
    assert not await hook.on_step_started(msgspec.structs.replace(env, attempt=2))
