"""A step record whose body names another DAG is not used by the sweep.

DAG ``evil``'s step record is rewritten so its body names DAG ``victim`` (a record written
by hand, by another tool, or by a client allowed to write the bucket). The sweep's orphan
rescue re-reads records by the names they carry; if it took this one, it would judge
victim's signal-gated step by evil's signals and run it. The store leaves such a record
out (logged), so victim's step keeps waiting for its own signal.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import msgspec
import pytest

from ebind.app import App
from ebind.workflow.dag import DAG
from ebind.workflow.types import StepStatus

pytestmark = pytest.mark.timeout(60)
PRE = "$KV.ebind-dags."


async def test_a_record_naming_another_dag_runs_nothing_there(app: App, start_worker) -> None:
    await start_worker("w1")
    wf = app.workflow
    v = DAG("victim")
    v.step("gated", "wf.add", 1, 2, wait_for_signals=["go"])
    await v.submit(wf)

    e = DAG("evil")
    e.step("gated", "wf.add", 1, 2, wait_for_signals=["go"])
    e.step("stay", "wf.add", 1, 2, wait_for_signals=["never"])  # keeps evil running
    await e.submit(wf)
    assert await wf.signal("evil", "go") is True
    async with asyncio.timeout(15):
        while (await wf.store.get_step("evil", "gated"))[0].status is not StepStatus.DONE:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    # evil's own finished record, rewritten: a dispatched-long-ago step naming victim.
    rec, _ = await wf.store.get_step("evil", "gated")
    forged = msgspec.structs.replace(
        rec,
        dag_id="victim",
        status=StepStatus.RUNNING,
        attempt=0,
        worker_id="",
        started_at=datetime(2020, 1, 1, tzinfo=UTC),
        dispatch_seq=0,
        redispatches=0,
    )
    await app.js.publish(PRE + "evil.step.gated", msgspec.json.encode(forged))

    await asyncio.sleep(6)  # several sweeps (FAST: every 0.5 s)
    victim, _ = await wf.store.get_step("victim", "gated")
    assert victim.status is StepStatus.PENDING, (
        f"victim's step, waiting on a signal victim never got, is {victim.status.value}"
    )
