"""A DAG that collection could not examine is reported, so the scheduler collects again."""

from __future__ import annotations

from ebind.workflow.history import collect
from ebind.workflow.store_mem import MemStore
from ebind.workflow.types import DAGMeta, DAGStatus


async def test_a_failed_reindex_is_reported_and_the_rest_goes_on() -> None:
    def faults(op: str, key: str) -> None:
        if op == "put_live" and key.endswith(".old"):
            raise TimeoutError("server away")

    store = MemStore(faults=faults)
    # Two DAGs submitted before the live index existed: one re-index fails, one works.
    await store.put_meta("old", DAGMeta(id="old", status=DAGStatus.RUNNING), 0)
    await store.put_meta("other", DAGMeta(id="other", status=DAGStatus.RUNNING), 0)
    report = await collect(store, float("inf"))
    assert report.failed == ["old"]
    assert report.indexed == ["other"]
    assert report.examined == 2
