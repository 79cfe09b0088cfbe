"""kill -9 of the file-backed server under load: no accepted task is lost, every waiter resumes.

The embedded node fsyncs every write before acknowledging it, so whatever ``delay()`` reported
as accepted survives a SIGKILL of the server; the producer's, the worker's and the waiters'
connections come back on their own once the server restarts on the same port and store.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from ebind.app import App
from ebind.embed import Node
from ebind.errors import PublishFailed
from ebind.future import Future
from ebind.worker import Worker

LOAD_SECONDS = 3.0
MIN_ACCEPTED = 50


async def _reconnected(app: App, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not app.is_connected:
        assert time.monotonic() < deadline, f"{app.name} did not reconnect within {within}s"
        await asyncio.sleep(0.05)


async def test_server_sigkill_under_load_loses_no_accepted_task(nats_node: Node) -> None:
    opts = {"reconnect_time_wait": 0.2, "max_reconnect_attempts": -1}
    worker_app = App("kill9", nats_url=nats_node.client_url, **opts)
    producer = App("kill9", nats_url=nats_node.client_url, publish_timeout=1.0, **opts)
    ran: Counter[int] = Counter()

    @worker_app.task(name="kill9.double")
    async def double(i: int) -> int:
        ran[i] += 1
        return 2 * i

    producer.registry = worker_app.registry
    await worker_app.connect()
    await producer.connect()
    worker = Worker(worker_app, concurrency=16, ack_wait=2.0, scheduler=False)
    runner = asyncio.create_task(worker.run())
    accepted: dict[int, Future[int]] = {}
    refused = 0
    try:
        await worker.wait_ready()

        async def load() -> None:
            nonlocal refused
            i, end = 0, time.monotonic() + LOAD_SECONDS
            cap = end + 30.0
            # A busy machine accepts fewer per second: load past LOAD_SECONDS until enough
            # tasks were accepted for the check to mean something (bounded by ``cap``).
            while time.monotonic() < end or (
                len(accepted) <= MIN_ACCEPTED and time.monotonic() < cap
            ):
                try:
                    accepted[i] = await double.delay(i)
                except PublishFailed:
                    refused += 1  # not accepted: the caller knows and may retry
                    await asyncio.sleep(0.05)
                i += 1

        loader = asyncio.create_task(load())
        await asyncio.sleep(LOAD_SECONDS / 3)
        nats_node.kill()
        await asyncio.sleep(0.5)
        nats_node.restart()
        await loader
        await _reconnected(producer)
        await _reconnected(worker_app)
        results = await asyncio.wait_for(
            asyncio.gather(*(f.result() for f in accepted.values())), 60
        )
    finally:
        await worker.stop()
        await asyncio.wait_for(runner, 20)
        await producer.close()
        await worker_app.close()
    assert len(accepted) > MIN_ACCEPTED, "the load produced too few accepted tasks to mean anything"
    assert results == [2 * i for i in accepted]
    missing = [i for i in accepted if ran[i] == 0]
    assert not missing, f"accepted tasks that never ran: {missing[:10]}"
    print(f"accepted={len(accepted)} refused={refused} reruns={sum(ran.values()) - len(ran)}")


async def test_server_sigkill_mid_dag_the_dag_completes(nats_node: Node) -> None:
    from ebind.workflow import DAG

    opts = {"reconnect_time_wait": 0.2, "max_reconnect_attempts": -1}
    worker_app = App("kill9wf", nats_url=nats_node.client_url, **opts)
    client = App("kill9wf", nats_url=nats_node.client_url, **opts)

    @worker_app.task(name="kill9wf.inc")
    async def inc(x: int) -> int:
        await asyncio.sleep(0.05)
        return x + 1

    client.registry = worker_app.registry
    await worker_app.connect()
    await client.connect()
    worker_app.configure_workflow(sweep_interval=0.5, redispatch_after=3.0)
    worker = Worker(worker_app, concurrency=8, ack_wait=2.0, scheduler=True)
    runner = asyncio.create_task(worker.run())
    try:
        await worker.wait_ready()
        dag = DAG()
        prev = dag.step("s0", inc, 0)
        for n in range(1, 20):
            prev = dag.step(f"s{n}", inc, prev.ref())
        await dag.submit(client.workflow)
        await asyncio.sleep(0.3)  # a few steps in
        nats_node.kill()
        await asyncio.sleep(0.5)
        nats_node.restart()
        await _reconnected(client)
        assert await client.workflow.result(dag.id, prev, timeout=60) == 20
        meta = await client.workflow.wait(dag.id, timeout=30)
        assert meta.status.value == "done"
    finally:
        await worker.stop()
        await asyncio.wait_for(runner, 20)
        await client.close()
        await worker_app.close()
