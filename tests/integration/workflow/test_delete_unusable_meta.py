"""A DAG id holding a record no reader can use (a meta with a time without a zone, or
only a step record naming another DAG) can be deleted, and the id submitted again."""

from __future__ import annotations

import contextlib

import msgspec
import pytest

from ebind.app import App
from ebind.errors import DAGNotFound
from ebind.workflow.dag import DAG
from ebind.workflow.types import DAGStatus

pytestmark = pytest.mark.timeout(60)
PRE = "$KV.ebind-dags."


def _dag(dag_id: str) -> DAG:
    d = DAG(dag_id)
    d.step("a", "wf.add", 1, 2)
    return d


async def test_delete_clears_an_unusable_meta(app: App, start_worker) -> None:
    await start_worker("w1")
    wf = app.workflow
    await _dag("m").submit(wf)
    assert (await wf.wait("m", timeout=15)).status is DAGStatus.DONE
    naive = b'{"id":"m","status":"done","created_at":"2020-01-01T00:00:00"}'
    await app.js.publish(PRE + "m.meta", naive)
    await wf.delete_dag("m")
    await _dag("m").submit(wf)
    assert (await wf.wait("m", timeout=15)).status is DAGStatus.DONE


async def test_delete_clears_an_orphan_unusable_step(app: App, start_worker) -> None:
    await start_worker("w1")
    wf = app.workflow
    await _dag("o").submit(wf)
    assert (await wf.wait("o", timeout=15)).status is DAGStatus.DONE
    rec, _ = await wf.store.get_step("o", "a")
    await wf.delete_dag("o")
    forged = msgspec.structs.replace(rec, dag_id="zz")  # names another DAG; no meta
    await app.js.publish(PRE + "o.step.a", msgspec.json.encode(forged))
    with contextlib.suppress(DAGNotFound):
        await wf.delete_dag("o")  # no meta: DAGNotFound, after the cleanup
    await _dag("o").submit(wf)
    assert (await wf.wait("o", timeout=15)).status is DAGStatus.DONE
