"""App served by the scheduler crash-point tests: a fast workflow, and a ledger of handler runs.

``EBIND_TEST_START_WRITE_DELAY`` sets the step hook's ``start_write_delay`` (default 0: every
step writes ``running`` before its handler and finishes on the read-fence-write path, whose
separate writes are where the step crash points sit).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from chaos_app import ChaosApp, _ledger

from ebind.context import Context
from ebind.retry import RetryPolicy
from ebind.workflow.workflow import Workflow


class DagCrashApp(ChaosApp):
    """The chaos App's fast workflow, with the step hook's start write delay from the env."""

    def configure_workflow(self, **options: Any) -> Workflow:
        """Configure as the chaos App does, plus ``EBIND_TEST_START_WRITE_DELAY`` (default 0)."""
        delay = float(os.environ.get("EBIND_TEST_START_WRITE_DELAY", "0"))
        return super().configure_workflow(**options, start_write_delay=delay)


app = DagCrashApp("dagcrash")


@app.task(name="dc.add")
async def add(ctx: Context, x: int, y: int) -> int:
    """Return ``x + y`` after ``EBIND_TEST_STEP_SLEEP`` seconds (default none)."""
    _ledger(ctx)
    await asyncio.sleep(float(os.environ.get("EBIND_TEST_STEP_SLEEP", "0")))
    return x + y


@app.task(name="dc.fail", retry=RetryPolicy.none())
async def fail(ctx: Context, x: int) -> int:
    """Fail on the first attempt, so the step is failed and dead-lettered at once."""
    _ledger(ctx)
    raise ValueError(f"bad step {x}")


EXPECTED = {"a": 3, "b": 13, "c": 103, "d": 116}
"""Each step's result in the DAG ``build_dag`` makes."""


def build_dag(dag_id: str) -> Any:
    """A diamond: ``a`` feeds ``b`` and ``c``, which ``d`` adds up (results in EXPECTED)."""
    from ebind.workflow import DAG

    dag = DAG(id=dag_id)
    a = dag.step("a", "dc.add", 1, 2)
    b = dag.step("b", "dc.add", a.ref(), 10)
    c = dag.step("c", "dc.add", a.ref(), 100)
    dag.step("d", "dc.add", b.ref(), c.ref())
    return dag


def build_failing_dag(dag_id: str) -> Any:
    """``a`` then ``bad``, which fails for good on its first attempt."""
    from ebind.workflow import DAG

    dag = DAG(id=dag_id)
    a = dag.step("a", "dc.add", 1, 2)
    dag.step("bad", "dc.fail", a.ref())
    return dag


async def _submit(nats_url: str, dag_id: str) -> None:
    producer = DagCrashApp("dagcrash", nats_url=nats_url)
    producer.registry = app.registry
    await producer.connect()
    try:
        await build_dag(dag_id).submit(producer.workflow)
    finally:
        await producer.close()


if __name__ == "__main__":  # the producer process of the submit crash test
    asyncio.run(_submit(sys.argv[1], sys.argv[2]))
