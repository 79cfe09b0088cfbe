"""A hostile producer forges DAG step messages; only the scheduler's dispatch may run a step.

Each test publishes a TaskEnvelope with a DAG's ids on ``TASKS.<fn>`` with plain nats-py,
as anyone allowed to publish tasks could, against a real node and a real worker with the
scheduler. The handler records every call: the forged arguments (``666``) never reach it,
the step record and results are untouched, the raw message lands in the DLQ as
``step_unproven``, and the DAG finishes with the real arguments once its gate opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ebind.app import App
from ebind.errors import StepNotFound
from ebind.wire import DLQEntry, ErrorKind, TaskEnvelope, encoder
from ebind.workflow import DAG, DAGStatus, Workflow
from ebind.workflow.types import StepRecord

sys.path.insert(0, str(Path(__file__).parent.parent / "integration" / "workflow"))
from test_workflow_nats import wait_status

pytestmark = pytest.mark.timeout(90)

FORGED = 666
# The trace-context key a dispatch's generation travels in (spelled out, so that this
# file states the wire format rather than importing it).
GENERATION = "ebind-generation"

tasks = App("forge")
CALLS: list[tuple[str, int]] = []
GATES: dict[str, asyncio.Event] = {}


@tasks.task(name="forge.rec")
async def rec(tag: str, value: int) -> int:
    """Record the call; wait while the test holds a gate for ``tag``."""
    CALLS.append((tag, value))
    gate = GATES.get(tag)
    if gate is not None:
        await gate.wait()
    return value


@pytest.fixture
async def app(nats_url: str) -> AsyncIterator[App]:
    """A connected App with a fast-sweeping workflow and one worker running the scheduler."""
    CALLS.clear()
    GATES.clear()
    a = App("forge", nats_url=nats_url)
    a.registry = tasks.registry
    await a.connect()
    a._workflow = Workflow.from_app(a, sweep_interval=0.5, nak_delay=0.1)
    w = a.worker(worker_id="w1", ack_wait=2.0, shutdown_grace=1.0)
    run = asyncio.create_task(w.run())
    try:
        yield a
    finally:
        for gate in GATES.values():
            gate.set()
        await w.stop()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(run, 5)
        await a.workflow.close()
        await a.close()


async def _record(app: App, dag_id: str, step_id: str) -> tuple[StepRecord, int]:
    return await app.workflow.store.get_step(dag_id, step_id)


async def _forge(app: App, dag_id: str, step_id: str, gen: int | None) -> bytes:
    """Publish a step message with the forged value; returns its exact bytes."""
    env = TaskEnvelope(
        id=f"{dag_id}:{step_id}",
        name="forge.rec",
        payload=msgspec.Raw(msgspec.json.encode([step_id, FORGED])),
        dag_id=dag_id,
        step_id=step_id,
        trace_ctx={} if gen is None else {GENERATION: str(gen)},
    )
    data = encoder.encode(env)
    await app.js.publish("TASKS.forge.rec", data)
    return data


async def _watch(app: App, subject: str) -> tuple[list[str], Any]:
    """Subjects of the messages published on ``subject`` from now on, and the subscription."""
    seen: list[str] = []

    async def note(msg: Any) -> None:
        seen.append(msg.subject)

    return seen, await app.nc.subscribe(subject, cb=note)


async def _refused(
    app: App, dag_id: str, step_id: str, gen: int | None, before: tuple[StepRecord, int]
) -> DLQEntry:
    """Forge a message for the step; it must be dead-lettered and change nothing."""
    # The events stream is a work queue (consumed events are gone): watch the subjects.
    events, sub = await _watch(app, f"DAG.{dag_id}.*.{step_id}")
    try:
        entry = await _dead_lettered(app, await _forge(app, dag_id, step_id, gen))
        await _untouched(app, dag_id, step_id, before)
        await app.nc.flush()
    finally:
        await sub.unsubscribe()
    assert events == []
    return entry


async def _dead_lettered(app: App, data: bytes, limit: float = 30.0) -> DLQEntry:
    """Wait for the DLQ entry holding ``data``; it must say ``step_unproven``."""
    async with asyncio.timeout(limit):
        while True:
            for letter in await app.dlq.list():
                if letter.entry.raw == data:
                    assert letter.entry.error.kind == ErrorKind.STEP_UNPROVEN.value
                    assert letter.entry.task is None
                    return letter.entry
            await asyncio.sleep(0.1)


async def _untouched(app: App, dag_id: str, step_id: str, before: tuple[StepRecord, int]) -> None:
    rec_now, rev_now = await _record(app, dag_id, step_id)
    assert rev_now == before[1]
    assert msgspec.json.encode(rec_now) == msgspec.json.encode(before[0])
    with pytest.raises(StepNotFound):
        await app.workflow.store.get_result(dag_id, step_id)
    assert all(value != FORGED for _, value in CALLS)


async def _settled(app: App, dag_id: str, step_id: str, **want: Any) -> tuple[StepRecord, int]:
    """The record once it shows every field in ``want`` (the scheduler's writes landed)."""
    async with asyncio.timeout(20):
        while True:
            got = await _record(app, dag_id, step_id)
            if all(getattr(got[0], k) == v for k, v in want.items()):
                await asyncio.sleep(0.3)  # let any write racing this read land too
                again = await _record(app, dag_id, step_id)
                if again[1] == got[1]:
                    return got
            await asyncio.sleep(0.05)


async def _finishes(app: App, dag_id: str, results: dict[str, int]) -> None:
    assert await wait_status(app, dag_id, DAGStatus.DONE, DAGStatus.FAILED) is DAGStatus.DONE
    for step_id, value in results.items():
        assert await app.workflow.result(dag_id, step_id, timeout=5) == value
        assert CALLS.count((step_id, value)) == 1
    assert all(value != FORGED for _, value in CALLS)


async def test_a_step_waiting_on_a_signal_cannot_be_forged(app: App) -> None:
    wf = app.workflow
    dag = DAG(id="sig")
    first = dag.step("first", rec, "first", 1)
    gated = dag.step("gated", rec, "gated", 2, wait_for_signals=["approve"])
    dag.step("after", rec, "after", gated.ref())
    await dag.submit(wf)
    await wf.result("sig", first, timeout=20)
    before = await _settled(app, "sig", "gated", status="pending")
    # Its revision is what a dispatch from it would carry: the "adopt" guess.
    entry = await _refused(app, "sig", "gated", before[1], before)
    assert "is not its dispatch" in entry.error.message
    # The watch _refused relies on sees the real run's completion.
    completed, sub = await _watch(app, "DAG.sig.*.gated")
    assert await wf.signal("sig", "approve") is True
    await _finishes(app, "sig", {"first": 1, "gated": 2, "after": 2})
    await sub.unsubscribe()
    assert "DAG.sig.completed.gated" in completed


async def test_a_step_behind_an_armed_breakpoint_cannot_be_forged(app: App) -> None:
    wf = app.workflow
    dag = DAG(id="bp")
    a = dag.step("a", rec, "a", 1)
    dag.step("b", rec, "b", a.ref(), break_before=["check"])
    await dag.submit(wf, active_breakpoints=["check"])
    before = await _settled(app, "bp", "b", bp_before="blocked")
    await _refused(app, "bp", "b", before[1], before)
    assert await wf.resume_breakpoint("bp", "check") == 1
    await _finishes(app, "bp", {"a": 1, "b": 1})


async def test_a_step_with_unmet_dependencies_cannot_be_forged(app: App) -> None:
    wf = app.workflow
    dag = DAG(id="deps")
    a = dag.step("a", rec, "a", 5, wait_for_signals=["go"])
    dag.step("b", rec, "b", a.ref())
    await dag.submit(wf)
    before = await _settled(app, "deps", "b", status="pending")
    await _refused(app, "deps", "b", before[1], before)
    assert await wf.signal("deps", "go") is True
    await _finishes(app, "deps", {"a": 5, "b": 5})


async def test_a_step_of_a_paused_dag_cannot_be_forged(app: App) -> None:
    wf = app.workflow
    dag = DAG(id="paused")
    a = dag.step("a", rec, "a", 3, wait_for_signals=["go"])
    dag.step("b", rec, "b", a.ref())
    await dag.submit(wf)
    await wf.pause("paused")
    await wait_status(app, "paused", DAGStatus.PAUSED)
    before = await _settled(app, "paused", "a", held=True)
    await _refused(app, "paused", "a", before[1], before)
    await wf.resume("paused")
    assert await wf.signal("paused", "go") is True
    await _finishes(app, "paused", {"a": 3, "b": 3})


async def test_a_step_of_a_canceled_dag_cannot_be_forged(app: App) -> None:
    wf = app.workflow
    dag = DAG(id="canceled")
    dag.step("a", rec, "a", 4, wait_for_signals=["go"])
    await dag.submit(wf)
    await wf.cancel("canceled")
    before = await _settled(app, "canceled", "a", status="canceled")
    await _refused(app, "canceled", "a", before[1], before)
    assert await wait_status(app, "canceled", DAGStatus.CANCELED) is DAGStatus.CANCELED
    assert CALLS == []


async def test_a_step_message_without_a_generation_cannot_run_it(app: App) -> None:
    wf = app.workflow
    dag = DAG(id="nogen")
    dag.step("a", rec, "a", 7, wait_for_signals=["go"])
    await dag.submit(wf)
    before = await _settled(app, "nogen", "a", status="pending")
    entry = await _refused(app, "nogen", "a", None, before)
    assert "no dispatch generation" in entry.error.message
    assert await wf.signal("nogen", "go") is True
    await _finishes(app, "nogen", {"a": 7})


async def test_the_right_generation_with_other_arguments_cannot_run_a_running_step(
    app: App,
) -> None:
    wf = app.workflow
    GATES["a"] = asyncio.Event()
    dag = DAG(id="running")
    a = dag.step("a", rec, "a", 9)
    dag.step("b", rec, "b", a.ref())
    await dag.submit(wf)
    # The real dispatch runs (held in its handler) and its start write has landed.
    before = await _settled(app, "running", "a", status="running", attempt=1)
    assert CALLS == [("a", 9)]
    entry = await _refused(app, "running", "a", before[0].generation, before)
    assert "differs from the envelope dispatched" in entry.error.message
    GATES["a"].set()
    await _finishes(app, "running", {"a": 9, "b": 9})
