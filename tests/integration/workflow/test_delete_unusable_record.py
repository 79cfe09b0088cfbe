"""Deleting a DAG removes every record under its keys, also one no reader could use (a
step record whose body disagrees with its key), so a re-submit of the id starts clean.
"""

from __future__ import annotations

import msgspec
import pytest

from ebind.app import App
from ebind.workflow.dag import DAG
from ebind.workflow.types import DAGStatus

pytestmark = pytest.mark.timeout(60)
PRE = "$KV.ebind-dags."


def _dag() -> DAG:
    d = DAG("d")
    d.step("a", "wf.add", 1, 2)
    return d


async def test_delete_removes_an_unusable_record_too(app: App, start_worker) -> None:
    await start_worker("w1")
    wf = app.workflow
    await _dag().submit(wf)
    assert (await wf.wait("d", timeout=15)).status is DAGStatus.DONE
    rec, _ = await wf.store.get_step("d", "a")
    await app.js.publish(
        PRE + "d.step.a", msgspec.json.encode(msgspec.structs.replace(rec, step_id="b"))
    )
    await wf.delete_dag("d")
    left = await wf.store.list_steps("d")
    assert left == [], f"records left after delete_dag: {[(r.step_id, rev) for r, rev in left]}"
