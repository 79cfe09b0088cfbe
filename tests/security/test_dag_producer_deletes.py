"""A producer allowed DAGs (``producer(dags=True)``) deletes its finished DAG with only the
rights it has: key deletes, no stream purge."""

from __future__ import annotations

import pytest
from test_least_privilege import (  # noqa: F401  (fixture)
    PRODUCER_ID,
    app_for,
    provision,
    running_worker,
    secured_node,
    violations,
)

from ebind.workflow.dag import DAG
from ebind.workflow.types import DAGStatus

pytestmark = pytest.mark.timeout(90)


async def test_a_dag_producer_deletes_its_finished_dag(secured_node) -> None:  # noqa: F811
    await provision(secured_node)
    async with (
        app_for(secured_node, "producer", client_id=PRODUCER_ID) as prod,
        running_worker(secured_node),
    ):
        wf = prod.workflow
        dag = DAG(id="to-delete")
        dag.step("a", prod.tasks["perm.echo"], "x")
        await dag.submit(wf)
        assert (await wf.wait(dag.id, timeout=20)).status is DAGStatus.DONE
        await wf.delete_dag(dag.id)
        assert await wf.list_dags() == []
    assert violations(secured_node) == []
