"""A live-index entry with a time-zone-less time does not stop the sweep.

Such an entry (written by another tool) cannot be compared with the times ebind writes;
it reads as unreadable, and the sweep goes on to reconcile every DAG listed after it, one
that only the sweep can advance (records written, no event) included.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from ebind.app import App
from ebind.workflow.types import DAGMeta, DAGStatus, StepRecord, StepStatus

pytestmark = pytest.mark.timeout(60)
PRE = "$KV.ebind-dags."


async def _orphan_dag(app: App, dag_id: str) -> None:
    """A DAG whose records exist but no event was ever published: only a sweep runs it."""
    store = app.workflow.store
    run = secrets.token_hex(8)
    rec = StepRecord(
        dag_id=dag_id,
        step_id="s",
        fn_name="wf.add",
        args_json=msgspec.Raw(b"[1,2]"),
        status=StepStatus.PENDING,
        run_id=run,
    )
    await store.put_step(dag_id, "s", rec, 0)
    old = (datetime.now(UTC) - timedelta(seconds=30)).isoformat()
    await app.js.publish(f"{PRE}=.live.{dag_id}", f'{{"at":"{old}","run_id":"{run}"}}'.encode())
    meta = DAGMeta(id=dag_id, status=DAGStatus.RUNNING, created_at=datetime.now(UTC), run_id=run)
    await store.put_meta(dag_id, meta, 0)


async def _status_after(app: App, dag_id: str, seconds: float) -> DAGStatus:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        meta, _ = await app.workflow.store.get_meta(dag_id)
        if meta.status.terminal or asyncio.get_running_loop().time() > deadline:
            return meta.status
        await asyncio.sleep(0.1)


async def test_control_sweep_runs_an_orphan_dag(app: App, start_worker) -> None:
    await app.workflow.store._bind()
    await _orphan_dag(app, "zz-orphan")
    await start_worker("w1")
    assert await _status_after(app, "zz-orphan", 15) is DAGStatus.DONE


async def test_naive_live_entry_stops_no_other_dag(app: App, start_worker) -> None:
    await app.workflow.store._bind()
    # Written by another tool / a corrupted write: a valid LiveEntry without an offset.
    await app.js.publish(f"{PRE}=.live.aaa", b'{"at":"2020-01-01T00:00:00"}')
    await _orphan_dag(app, "zz-orphan")
    await start_worker("w1")
    # The control test finishes within ~1 s; here the sweep fails every time.
    assert await _status_after(app, "zz-orphan", 10) is DAGStatus.DONE
