"""3-node cluster: every ebind asset is R3 and work survives losing a stream leader."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import ebind
from ebind.embed import Cluster
from ebind.streams import DLQ_STREAM, RESP_STREAM, TASKS_STREAM
from ebind.workflow import DAG

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(150)]

ASSETS = (
    TASKS_STREAM,
    RESP_STREAM,
    DLQ_STREAM,
    "EBIND_DAG_EVENTS",
    "KV_ebind-dags",
    "KV_ebind-leases",
)


@pytest.fixture
async def ha_app(nats_cluster: Cluster) -> AsyncIterator[ebind.App]:
    app = ebind.App("ha-test", nats_url=nats_cluster.client_urls, replicas=3)
    await app.connect()
    try:
        yield app
    finally:
        await app.close()


async def _publish_with_retry(coro_factory: object, attempts: int = 40) -> object:
    # A publish during a stream leader election fails fast; the same task_id makes a retry safe.
    for _ in range(attempts):
        try:
            return await coro_factory()  # type: ignore[operator]
        except ebind.PublishFailed:
            await asyncio.sleep(0.25)
    raise AssertionError("publish kept failing after the cluster should have recovered")


async def _dump_dag(app: ebind.App, dag_id: str) -> None:
    """Print what a stuck DAG looks like: its steps, the events stream, lease and liveness."""
    wf = app.workflow
    print(f"\n===== diagnostics for DAG {dag_id} =====")
    try:
        await wf.debug_print(dag_id)
        for rec, rev in await wf.store.list_steps(dag_id):  # type: ignore[attr-defined]
            print(
                f"step {rec.step_id}: rev={rev} status={rec.status.value} gen={rec.generation}"
                f" attempt={rec.attempt} worker={rec.worker_id} started={rec.started_at}"
                f" finished={rec.finished_at} error={rec.error_kind}:{rec.error_message}"
            )
    except Exception as exc:
        print(f"dag records unreadable: {exc!r}")
    for stream in ("EBIND_DAG_EVENTS", TASKS_STREAM):
        try:
            info = await app.js.stream_info(stream)
            print(f"{stream}: msgs={info.state.messages} leader={info.cluster.leader}")
            for ci in (await app.js.consumers_info(stream)) or []:
                print(
                    f"  consumer {ci.name}: pending={ci.num_pending}"
                    f" ack_pending={ci.num_ack_pending} redelivered={ci.num_redelivered}"
                )
        except Exception as exc:
            print(f"{stream} unreadable: {exc!r}")
    try:
        kv = await app.js.key_value("ebind-leases")
        for key in await kv.keys():
            entry = await kv.get(key)
            print(f"lease {key}: rev={entry.revision} value={entry.value!r}")
    except Exception as exc:
        print(f"leases unreadable: {exc!r}")
    sched = wf.scheduler
    print(f"scheduler: leader={wf.elector.is_leader()} sweeps={sched.sweeps}")


async def test_every_stream_and_bucket_has_three_replicas(ha_app: ebind.App) -> None:
    _ = ha_app.workflow  # the workflow's stores are bound too
    for name in ASSETS:
        info = await ha_app.js.stream_info(name)
        assert info.config.num_replicas == 3, f"{name} has {info.config.num_replicas} replicas"


async def test_tasks_and_a_dag_survive_losing_the_tasks_stream_leader(
    ha_app: ebind.App, nats_cluster: Cluster
) -> None:
    @ha_app.task(name="ha.slow_square")
    async def slow_square(n: int) -> int:
        await asyncio.sleep(0.05)
        return n * n

    @ha_app.task(name="ha.total")
    def total(xs: list[int]) -> int:
        return sum(xs)

    # What a user who wants a lost node's steps rescued within seconds would set: sweep
    # every 2 s, re-send a dispatched-but-unstarted step after 3 s and re-enqueue it as a
    # new generation after 20 s, presume a worker gone after 6 s without a liveness beat.
    ha_app.configure_workflow(
        sweep_interval=2.0,
        sweep_check_interval=0.5,
        dispatch_grace=3.0,
        redispatch_after=20.0,
        liveness_interval=1.0,
        liveness_ttl=6.0,
    )
    worker = ha_app.worker(concurrency=8, ack_wait=3.0, shutdown_grace=5.0)
    running = asyncio.create_task(worker.run())
    try:
        dag = DAG()
        leaves = [dag.step(f"sq-{i}", slow_square, i) for i in range(12)]
        out = dag.step("total", total, [s.ref() for s in leaves])
        await dag.submit(ha_app.workflow)
        futures = [
            await _publish_with_retry(
                lambda i=i: slow_square.apply_async(args=(i,), task_id=f"t{i}")
            )
            for i in range(6)
        ]

        info = await ha_app.js.stream_info(TASKS_STREAM)
        leader = info.cluster.leader
        victim = next(i for i, n in enumerate(nats_cluster.nodes) if n.server_name == leader)
        await asyncio.to_thread(nats_cluster.kill_node, victim)

        more = [
            await _publish_with_retry(
                lambda i=i: slow_square.apply_async(args=(i,), task_id=f"after{i}")
            )
            for i in range(6)
        ]
        results = [await f.result(timeout=60) for f in [*futures, *more]]  # type: ignore[attr-defined]
        assert results == [i * i for i in range(6)] * 2
        try:
            got = await ha_app.workflow.result(dag.id, out, timeout=90)
        except TimeoutError:
            await _dump_dag(ha_app, dag.id)
            raise
        assert got == sum(i * i for i in range(12))
        meta = await ha_app.workflow.wait(dag.id, timeout=30)
        assert meta.status.value == "done"

        await asyncio.to_thread(nats_cluster.restart_node, victim)
        await asyncio.to_thread(nats_cluster.wait_healthy, victim, 30.0)
    finally:
        await worker.stop()
        await running
