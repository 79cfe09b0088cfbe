"""Under a backlog the sweep leaves queued step messages alone and re-sends only lost ones.

One worker with concurrency 1 works through a DAG of 12 parallel slow steps while
``redispatch_after`` is far shorter than the backlog. A core subscription on ``TASKS.>``
sees every publish the scheduler makes, deduplicated by the stream or not.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import prometheus_client
import pytest
from prometheus_client import CollectorRegistry
from wf_app import slow
from wf_helpers import connected_app

from ebind.app import App
from ebind.contrib.prometheus import prometheus_middleware
from ebind.streams import TASKS_STREAM
from ebind.wire import TaskEnvelope
from ebind.workflow import DAG, DAGStatus

STEPS = 12
STEP_SECONDS = 0.4
# The last queued step waits about STEPS * STEP_SECONDS, many times redispatch_after.
SHORT = {
    "sweep_interval": 0.25,
    "dispatch_grace": 0.2,
    "redispatch_after": 0.8,
    "redispatch_cap": 30.0,
}


class Publishes:
    """Every message published on ``TASKS.>`` while subscribed: its step and msg-id."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def on_msg(self, msg: Any) -> None:
        env = msgspec.json.decode(msg.data, type=TaskEnvelope)
        self.seen.append((env.step_id, (msg.headers or {}).get("Nats-Msg-Id", "")))

    def per_step(self) -> Counter[str]:
        """Publishes per step, duplicates the stream dropped included."""
        return Counter(step for step, _ in self.seen)

    def stored_per_step(self) -> Counter[str]:
        """Distinct msg-ids per step: the copies the stream stored."""
        return Counter(step for step, _ in set(self.seen))


@contextlib.asynccontextmanager
async def watching(app: App) -> AsyncIterator[Publishes]:
    pubs = Publishes()
    sub = await app.nc.subscribe("TASKS.>", cb=pubs.on_msg)
    try:
        yield pubs
    finally:
        await sub.unsubscribe()


def backlog_dag(dag_id: str) -> DAG:
    dag = DAG(id=dag_id)
    for i in range(STEPS):
        dag.step(f"s{i}", slow, f"s{i}", STEP_SECONDS)
    return dag


async def delete_step_message(app: App, dag_id: str, step_id: str) -> None:
    """Delete the queued message of one step from EBIND_TASKS by hand (it is lost)."""
    info = await app.js.stream_info(TASKS_STREAM)
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        with contextlib.suppress(Exception):
            raw = await app.js.get_msg(TASKS_STREAM, seq=seq)
            if (raw.headers or {}).get("Nats-Msg-Id", "").startswith(f"{dag_id}:{step_id}:"):
                assert await app.js.delete_msg(TASKS_STREAM, seq)
                return
    raise AssertionError(f"no message of step {step_id!r} in {TASKS_STREAM}")


async def finished(app: App, dag_id: str, limit: float = 40.0) -> DAGStatus:
    async with asyncio.timeout(limit):
        while True:
            meta, _ = await app.workflow.info(dag_id)
            if meta.status.terminal:
                return meta.status
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def serving(leader: App) -> AsyncIterator[None]:
    """One worker of concurrency 1 on ``leader`` (whose Workflow runs the scheduler)."""
    w = leader.worker(worker_id="backlog", concurrency=1, ack_wait=10.0, shutdown_grace=1.0)
    task = asyncio.create_task(w.run())
    try:
        yield
    finally:
        await w.stop()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, 5)


@pytest.mark.timeout(90)
async def test_queued_steps_are_never_resent_and_a_lost_one_is_resent_once(
    app: App, nats_url: str
) -> None:
    leader = await connected_app(nats_url, **SHORT)
    registry = CollectorRegistry()
    metrics = prometheus_middleware(registry)
    try:
        dag = backlog_dag("backlog-lost")
        async with watching(app) as pubs:
            await dag.submit(leader.workflow)  # dispatched by the leader's own engine
            await delete_step_message(app, dag.id, "s11")
            async with serving(leader):
                assert await finished(app, dag.id) is DAGStatus.DONE
            await app.nc.flush()
        counts = pubs.per_step()
        expected = {f"s{i}": 1 for i in range(STEPS)} | {"s11": 2}
        assert dict(counts) == expected, f"publishes per step: {dict(counts)}"
        assert pubs.stored_per_step()["s11"] == 2  # a new generation, not a same-id copy
        assert leader.workflow.scheduler.redispatches == 1
        _, steps = await app.workflow.info(dag.id)
        assert all(s.status.value == "done" for s in steps)
        rec = {s.step_id: s for s in steps}
        assert rec["s11"].redispatches == 1 and rec["s11"].dispatch_seq > 0
        assert all(rec[f"s{i}"].redispatches == 0 for i in range(STEPS - 1))
        exported = prometheus_client.generate_latest(registry).decode()
        assert 'ebind_step_redispatches_total{reason="lost"} 1.0' in exported
    finally:
        metrics.close()
        await leader.workflow.close()
        await leader.close()


@pytest.mark.timeout(90)
async def test_steps_dispatched_by_another_process_are_probed_once_and_never_copied(
    app: App, nats_url: str
) -> None:
    leader = await connected_app(nats_url, **SHORT)
    try:
        dag = backlog_dag("backlog-probe")
        async with watching(app) as pubs:
            async with serving(leader):
                # Submitted here: the leader never saw these dispatches' sequences.
                await dag.submit(app.workflow)
                assert await finished(app, dag.id) is DAGStatus.DONE
            await app.nc.flush()
        stored = pubs.stored_per_step()
        assert dict(stored) == {f"s{i}": 1 for i in range(STEPS)}, f"copies: {dict(stored)}"
        # At most one same-id re-publish per step (the stream drops it as a duplicate).
        assert max(pubs.per_step().values()) <= 2, f"publishes: {dict(pubs.per_step())}"
        assert leader.workflow.scheduler.redispatches == 0
    finally:
        await leader.workflow.close()
        await leader.close()
