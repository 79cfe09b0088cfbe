"""A worker loses NATS while running a task, then the link comes back."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from urllib.parse import urlparse

import pytest
import structlog
from tcp_proxy import TcpProxy
from worker_helpers import running, tasks_empty, wait_for

from ebind.app import App
from ebind.embed import Node
from ebind.retry import RetryPolicy
from ebind.streams import RESP_STREAM

ACK_WAIT = 2.0


@pytest.fixture
async def proxy(nats_node: Node) -> AsyncIterator[TcpProxy]:
    url = urlparse(nats_node.client_url)
    p = TcpProxy(url.hostname or "127.0.0.1", int(url.port or 4222))
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


@pytest.fixture
async def apps(nats_node: Node, proxy: TcpProxy) -> AsyncIterator[tuple[App, App]]:
    """(worker App connected through the proxy, client App connected directly)."""
    # A short publish timeout: a response sent during the outage is surely unconfirmed,
    # yet it is stored once the link is back (nats-py buffers it).
    worker_app = App("a9", nats_url=proxy.url, publish_timeout=1.0)
    client = App("a9", nats_url=nats_node.client_url)
    client.registry = worker_app.registry  # tasks registered later are seen by both
    try:
        yield worker_app, client
    finally:
        await client.close()
        await worker_app.close()


async def _outage(proxy: TcpProxy, gate: asyncio.Event) -> None:
    """Cut the worker's link, let the blocked handler finish meanwhile, restore later."""
    proxy.cut()
    await asyncio.sleep(0.2)
    gate.set()
    await asyncio.sleep(2 * ACK_WAIT)  # past ack_wait: the server may redeliver
    proxy.restore()


async def _responses_for(app: App, task_id: str, client_id: str) -> int:
    info = await app.js.stream_info(RESP_STREAM, subjects_filter=f"RESP.{client_id}.>")
    count = 0
    for subject, n in (info.state.subjects or {}).items():
        if subject.endswith(task_id) or task_id in subject:
            count += n
    return count


@pytest.mark.parametrize("one_attempt", [False, True], ids=["default-policy", "no-retries"])
async def test_a_worker_that_loses_nats_mid_task_records_one_outcome_and_keeps_consuming(
    apps: tuple[App, App], proxy: TcpProxy, one_attempt: bool
) -> None:
    worker_app, producer = apps
    gate, runs = asyncio.Event(), Counter[str]()

    # With no retries, a response that could not be stored must not cost the only attempt
    # (the caller would get TaskFailed(worker_lost) for a task that succeeded).
    @worker_app.task(name="a9.slow", retry=RetryPolicy.none() if one_attempt else None)
    async def slow(x: int) -> int:
        runs["slow"] += 1
        await gate.wait()
        return x * 2

    @worker_app.task(name="a9.quick")
    async def quick(x: int) -> int:
        runs["quick"] += 1
        return x + 1

    await worker_app.connect()
    await producer.connect()
    with structlog.testing.capture_logs() as logs:
        async with running(worker_app, ack_wait=ACK_WAIT):
            fut = await producer.enqueue("a9.slow", 21)
            await wait_for(lambda: runs["slow"] > 0)
            await _outage(proxy, gate)  # the handler finishes while the link is down
            assert await fut.result(timeout=30) == 42
            # The worker reconnected and consumes again: new tasks complete promptly.
            futs = [await producer.enqueue("a9.quick", i) for i in range(20)]
            got = await asyncio.wait_for(asyncio.gather(*(f.result() for f in futs)), 10)
            assert got == [i + 1 for i in range(20)]
            # The unconfirmed delivery was nak'd with a delay: wait for its redelivery.
            await wait_for(lambda: tasks_empty(producer), 30)
    assert runs["quick"] == 20
    events = [e["event"] for e in logs]
    assert "worker.respond_failed" in events  # unconfirmed in time
    # The answer that landed late was found, by the worker still holding the message or by
    # a redelivery: the task neither ran again nor answered twice.
    assert {"worker.response_landed_late", "task.already_answered"} & set(events)
    assert runs["slow"] == 1
    assert await _responses_for(producer, fut.id, producer.client_id) == 1


async def test_a_dag_whose_worker_and_scheduler_lose_nats_mid_step_completes(
    apps: tuple[App, App], proxy: TcpProxy
) -> None:
    from ebind.workflow import DAG

    worker_app, client = apps
    gate, runs = asyncio.Event(), Counter[str]()

    @worker_app.task(name="a9wf.inc")
    async def inc(x: int) -> int:
        runs[f"inc{x}"] += 1
        if x == 1:
            await gate.wait()
        return x + 1

    await worker_app.connect()
    await client.connect()
    async with running(worker_app, ack_wait=ACK_WAIT, scheduler=True):
        dag = DAG()
        a = dag.step("a", inc, 0)
        b = dag.step("b", inc, a.ref())
        c = dag.step("c", inc, b.ref())
        await dag.submit(client.workflow)
        await wait_for(lambda: runs["inc1"] > 0)  # step b is running
        await _outage(proxy, gate)  # worker, hook and scheduler all lose the server
        assert await client.workflow.result(dag.id, c, timeout=60) == 3
        # The last step's result is stored before the scheduler marks the DAG finished.
        await client.workflow.wait(dag.id, timeout=30)
    info, steps = await client.workflow.info(dag.id)
    assert info.status.value == "done"
    assert {s.step_id: s.status.value for s in steps} == {"a": "done", "b": "done", "c": "done"}
    assert runs["inc0"] == 1 and runs["inc2"] == 1 and runs["inc1"] <= 2
