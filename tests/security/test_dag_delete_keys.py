"""Deleting DAGs with a producer's rights: key by key, each kind of key listed on its own,
and delete markers that expire, so deleted DAGs leave nothing that later listings pay for."""

from __future__ import annotations

import asyncio

import pytest
from click.testing import CliRunner
from test_least_privilege import (  # noqa: F401  (fixture)
    PRODUCER_ID,
    app_for,
    provision,
    secured_node,
)

from ebind.app import App
from ebind.cli import main
from ebind.workflow.types import DAGMeta, DAGStatus

pytestmark = pytest.mark.timeout(120)
PRE = "$KV.ebind-dags."


async def _finished(app: App, dag_id: str, steps: int) -> None:
    await app.workflow.store.put_meta(dag_id, DAGMeta(id=dag_id, status=DAGStatus.DONE), 0)
    for i in range(steps):
        await app.js.publish(f"{PRE}{dag_id}.step.s{i}", b"{}")
        await app.js.publish(f"{PRE}{dag_id}.result.s{i}", b"1")


async def _left(app: App, dag_id: str) -> dict[str, int]:
    info = await app.js.stream_info("KV_ebind-dags", subjects_filter=f"{PRE}{dag_id}.>")
    return dict(info.state.subjects or {})


async def test_a_deleted_dag_leaves_no_lasting_marker(app: App) -> None:
    await _finished(app, "t1", 3)
    await app.workflow.delete_dag("t1")
    async with asyncio.timeout(10):
        while await _left(app, "t1"):  # noqa: ASYNC110 - the server expires the markers
            await asyncio.sleep(0.2)


async def test_a_dag_producer_deletes_a_dag_of_600_steps(secured_node) -> None:  # noqa: F811
    """1,201 keys: more than one batched read lists, fewer per kind."""
    await provision(secured_node)
    async with app_for(secured_node, "producer", client_id=PRODUCER_ID) as prod:
        await _finished(prod, "big", 600)
        await asyncio.wait_for(prod.workflow.delete_dag("big"), 60)
        assert await prod.workflow.list_dags() == []


async def test_cli_rm_deletes_a_dag_whose_meta_is_unusable(app: App, nats_url: str) -> None:
    naive = b'{"id":"m","status":"done","created_at":"2020-01-01T00:00:00"}'
    await app.js.publish(PRE + "m.meta", naive)
    await app.js.publish(PRE + "m.step.a", b"{}")
    out = await asyncio.to_thread(
        CliRunner().invoke, main, ["--nats", nats_url, "dag", "rm", "m", "--yes"]
    )
    assert out.exit_code == 0, out.output
    assert "deleted m" in out.output


async def test_listing_dags_after_many_deletes(secured_node) -> None:  # noqa: F811
    """Past 1,024 lasting meta markers the ``*.meta`` listing would need a consumer, which
    neither a producer nor a worker may create, although no DAG is left."""
    await provision(secured_node)
    async with app_for(secured_node, "producer", client_id=PRODUCER_ID) as prod:
        store = prod.workflow.store
        slots = asyncio.Semaphore(32)

        async def one(i: int) -> None:
            async with slots:
                d = f"gone{i}"
                await store.put_meta(d, DAGMeta(id=d, status=DAGStatus.DONE), 0)
                await prod.workflow.delete_dag(d)

        await asyncio.gather(*(one(i) for i in range(1100)))
        await asyncio.sleep(1.5)  # the markers' one second
        assert await asyncio.wait_for(prod.workflow.list_dags(), 30) == []
