"""A 3-node cluster losing quorum under load, then recovering.

A producer keeps enqueueing while an in-process worker (scheduler on, every asset R3) serves
the tasks and a DAG is in flight. Two of the three nodes are stopped: no stream or KV bucket
has a majority, so nothing can be stored. What must hold:

- every enqueue call returns or raises an ebind error within its publish timeout (no hang, no
  untyped exception), so a caller always knows whether its task was accepted;
- once both nodes are back, every accepted task completes with its result, every waiter that
  was blocked through the outage resumes, and the DAG finishes with the expected value.

The recovery time (restart of the two nodes to the first result a waiter receives) is
printed, together with the time until every accepted task had completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import ebind
from ebind.embed import Cluster
from ebind.errors import EbindError
from ebind.future import Future
from ebind.worker import Worker
from ebind.workflow import DAG
from ebind.workflow.leader import KVLeaseElector

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

PUBLISH_TIMEOUT = 1.5
# A publish that fails must fail within its timeout; the slack covers the timer that fails
# the oldest pending publish and a loaded 2-core machine.
PUBLISH_SLACK = 1.5
OUTAGE_SECONDS = 4.0
# How long the restarted cluster may take before it accepts enqueues again.
RECOVERY_BOUND = 30.0
CHAIN = 12


@dataclass
class Load:
    """What the producer side saw: accepted tasks, refusals by type, the slowest call."""

    accepted: dict[int, Future[int]] = field(default_factory=dict)
    refused: Counter[str] = field(default_factory=Counter)
    untyped: list[str] = field(default_factory=list)
    slowest: float = 0.0
    completed_at: dict[int, float] = field(default_factory=dict)
    # Set once an enqueue numbered ``restart_id`` or later was accepted.
    restart_id: int | None = None
    accepted_again: asyncio.Event = field(default_factory=asyncio.Event)

    def watch(self, i: int, fut: Future[int]) -> asyncio.Task[int]:
        """A waiter for task ``i`` that notes when its result arrived."""

        async def wait() -> int:
            value = await fut.result(timeout=90)
            self.completed_at[i] = time.monotonic()
            return value

        return asyncio.create_task(wait(), name=f"waiter-{i}")


def _opts() -> dict[str, Any]:
    return {"reconnect_time_wait": 0.2, "max_reconnect_attempts": -1, "connect_timeout": 2}


@pytest.fixture
async def apps(nats_cluster: Cluster) -> AsyncIterator[tuple[ebind.App, ebind.App]]:
    """A worker-side App and a producer App, both R3, on the whole cluster."""
    urls = nats_cluster.client_urls
    worker_app = ebind.App("quorum", nats_url=urls, replicas=3, **_opts())
    producer = ebind.App(
        "quorum", nats_url=urls, replicas=3, publish_timeout=PUBLISH_TIMEOUT, **_opts()
    )
    await worker_app.connect()
    await producer.connect()
    try:
        yield worker_app, producer
    finally:
        await producer.close()
        await worker_app.close()


async def _produce(
    producer: ebind.App, load: Load, waiters: list[Any], stop: asyncio.Event
) -> None:
    """Enqueue ``q.square(i)`` every 20 ms until ``stop``; each call is timed and typed."""
    i = 0
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            # The outer bound only turns a hang into a test failure with a clear message.
            fut = await asyncio.wait_for(
                producer.apply_async("q.square", (i,), task_id=f"q{i}"), PUBLISH_TIMEOUT * 4
            )
        except EbindError as exc:
            load.refused[type(exc).__name__] += 1
        except TimeoutError:
            load.untyped.append(f"q{i}: enqueue hung past {PUBLISH_TIMEOUT * 4}s")
        except Exception as exc:
            load.untyped.append(f"q{i}: {exc!r}")
        else:
            load.accepted[i] = fut
            if load.restart_id is not None and i >= load.restart_id:
                load.accepted_again.set()
            waiters.append(load.watch(i, fut))
        load.slowest = max(load.slowest, time.monotonic() - t0)
        i += 1
        await asyncio.sleep(0.02)


async def _restart(cluster: Cluster, nodes: list[int]) -> None:
    # Together: a single restarted node cannot elect anything on its own.
    await asyncio.gather(*(asyncio.to_thread(cluster.restart_node, i) for i in nodes))


async def test_quorum_loss_refuses_with_typed_errors_and_recovery_loses_nothing(
    apps: tuple[ebind.App, ebind.App], nats_cluster: Cluster
) -> None:
    worker_app, producer = apps

    @worker_app.task(name="q.square")
    async def square(n: int) -> int:
        await asyncio.sleep(0.25)  # slower than the producer: a backlog builds up
        return n * n

    @worker_app.task(name="q.inc")
    async def inc(x: int) -> int:
        await asyncio.sleep(0.3)
        return x + 1

    producer.registry = worker_app.registry
    worker_app.configure_workflow(
        sweep_interval=1.0,
        sweep_check_interval=0.25,
        dispatch_grace=1.0,
        redispatch_after=5.0,
        liveness_interval=0.5,
        liveness_ttl=4.0,
        elector=KVLeaseElector(worker_app.js, ttl=2.0),
    )
    worker = Worker(worker_app, concurrency=4, ack_wait=2.0, scheduler=True, shutdown_grace=3.0)
    runner = asyncio.create_task(worker.run())
    load, waiters, stop = Load(), list[Any](), asyncio.Event()
    try:
        await worker.wait_ready()
        dag = DAG(id="quorum-chain")
        prev = dag.step("s0", inc, 0)
        for n in range(1, CHAIN):
            prev = dag.step(f"s{n}", inc, prev.ref())
        await dag.submit(producer.workflow)

        producer_task = asyncio.create_task(_produce(producer, load, waiters, stop))
        await asyncio.sleep(1.5)  # load and the DAG are in flight
        before = len(load.accepted)
        meta, _ = await producer.workflow.info(dag.id)
        assert not meta.status.terminal, "the DAG finished before the outage"
        await asyncio.gather(*(asyncio.to_thread(nats_cluster.stop_node, i) for i in (1, 2)))
        await asyncio.sleep(OUTAGE_SECONDS)
        refused_in_outage = sum(load.refused.values())
        restarted = time.monotonic()
        blocked = len(load.accepted) - len(load.completed_at)
        next_id = len(load.accepted) + sum(load.refused.values())
        await _restart(nats_cluster, [1, 2])
        up = time.monotonic() - restarted
        # The producer goes on through the recovery until the cluster accepts its work again
        # (how long the streams take to elect leaders varies with the machine's load).
        load.restart_id = next_id
        if max(load.accepted, default=-1) >= next_id:
            load.accepted_again.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(load.accepted_again.wait(), RECOVERY_BOUND)
        await asyncio.sleep(1.0)
        stop.set()
        await producer_task

        results = await asyncio.wait_for(asyncio.gather(*waiters), 90)
        assert await producer.workflow.result(dag.id, prev, timeout=60) == CHAIN
        meta = await producer.workflow.wait(dag.id, timeout=30)
        assert meta.status.value == "done"
    finally:
        stop.set()
        await worker.stop()
        await asyncio.wait_for(runner, 20)
        for w in waiters:
            w.cancel()

    assert before > 20, "too little load before the outage to mean anything"
    assert blocked > 10, "too few waiters was blocked through the outage"
    assert refused_in_outage > 0, "the producer never noticed the lost quorum"
    assert not load.untyped, f"untyped or hanging enqueues: {load.untyped[:5]}"
    assert load.slowest <= PUBLISH_TIMEOUT + PUBLISH_SLACK, f"an enqueue took {load.slowest:.2f}s"
    assert results == [i * i for i in load.accepted]
    after = [t for t in load.completed_at.values() if t >= restarted]
    assert after, "no task completed after the restart"
    recovery = min(after) - restarted
    # A round trip that began after the restart: enqueue, run, store and receive again.
    assert max(load.accepted) >= next_id, f"no enqueue accepted {RECOVERY_BOUND}s after restart"
    fresh = [t for i, t in load.completed_at.items() if i >= next_id]
    assert fresh, "no task enqueued after the restart completed"
    round_trip = min(fresh) - restarted
    drained = max(load.completed_at.values()) - restarted
    print(
        f"quorum loss: accepted={len(load.accepted)} refused={dict(load.refused)} "
        f"slowest enqueue={load.slowest:.2f}s nodes up after {up:.2f}s; "
        f"{blocked} waiters blocked; recovery (restart to first completed task)={recovery:.2f}s,"
        f" to the first task enqueued after the restart completing={round_trip:.2f}s; "
        f"all accepted tasks done {drained:.2f}s after the restart"
    )
