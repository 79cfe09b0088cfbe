"""Cancel and pause of one DAG never write another DAG's steps.

A step record of DAG ``evil`` is rewritten so its body names DAG ``victim``. Cancel and
pause re-read step records by the names they carry on a conflict; were the record used,
the second write would land on victim. The store refuses a record that disagrees with its
key, so victim stays as it was.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from ebind.app import App
from ebind.workflow.dag import DAG
from ebind.workflow.types import StepStatus

pytestmark = pytest.mark.timeout(60)
PRE = "$KV.ebind-dags."


async def _gated(app: App, dag_id: str) -> None:
    d = DAG(dag_id)
    d.step("gated", "wf.add", 1, 2, wait_for_signals=["go"])
    await d.submit(app.workflow)


async def _victim_and_forged_evil(app: App, start_worker: Any) -> None:
    """Two gated DAGs, ``evil``'s step record rewritten so its body names the victim's."""
    await start_worker("w1")
    await _gated(app, "victim")
    await _gated(app, "evil")
    await _forge(app)


async def _forge(app: App) -> None:
    """Rewrite evil's own step record so its body names the victim's step."""
    rec, _ = await app.workflow.store.get_step("evil", "gated")
    forged = msgspec.structs.replace(rec, dag_id="victim")
    await app.js.publish(PRE + "evil.step.gated", msgspec.json.encode(forged))


async def test_cancel_of_one_dag_leaves_another_alone(app: App, start_worker) -> None:
    await _victim_and_forged_evil(app, start_worker)
    await app.workflow.cancel("evil")
    await asyncio.sleep(0.5)
    victim_meta, _ = await app.workflow.store.get_meta("victim")
    victim_step, _ = await app.workflow.store.get_step("victim", "gated")
    assert victim_meta.status.value == "running"
    assert victim_step.status is StepStatus.PENDING, (
        f"victim's step is {victim_step.status.value} after cancelling another DAG"
    )


async def test_pause_of_one_dag_leaves_another_alone(app: App, start_worker) -> None:
    await _victim_and_forged_evil(app, start_worker)
    await app.workflow.pause("evil")
    victim_step, _ = await app.workflow.store.get_step("victim", "gated")
    assert not victim_step.held, "victim's step was held by pausing another DAG"
