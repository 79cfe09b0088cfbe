"""A DAG step keeps its slot while it writes its completion, so its worker's liveness
record, bounded by the concurrency, lists every step in progress there (a step left out
would look orphaned and be re-sent while it runs)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from wf_app import app as shared_app

from ebind import Context
from ebind.app import App
from ebind.workflow import DAG
from ebind.workflow.hook import StepHook

_gate: asyncio.Event | None = None


@shared_app.task(name="wfsc.long")
async def long_step(ctx: Context) -> str:
    assert _gate is not None
    await _gate.wait()
    return "long"


@shared_app.task(name="wfsc.short")
async def short_step(i: int) -> int:
    return i


async def test_steps_writing_their_completion_keep_their_slots_and_stay_listed(
    app: App, start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    global _gate
    _gate = asyncio.Event()
    completions = asyncio.Event()  # the short steps' completion writes wait (a slow quorum)
    done = StepHook.on_step_done

    async def slow_done(self: StepHook, env: Any, result: bytes) -> None:
        if env.step_id.startswith("s"):
            await completions.wait()
        await done(self, env, result)

    monkeypatch.setattr(StepHook, "on_step_done", slow_done)
    concurrency = 20  # more slots than the record's margin for released steps (16)
    w = await start_worker("w", concurrency=concurrency)
    dag = DAG(id="long-and-many")
    long = dag.step("long", long_step)
    first = dag.step("first", short_step, 0)
    for i in range(45):
        dag.step(f"s{i}", short_step, i, after=[first])
    await dag.submit(app.workflow)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while w.in_flight < concurrency:
            assert loop.time() < deadline, f"in flight {w.in_flight}"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        hook = w._hook
        running = [k for k, e in hook._tracker.running["w"].items() if e.until is None]
        # Every slot is a step writing its completion or the long one.
        assert w.in_flight == concurrency and len(running) == concurrency
        assert f"{dag.id}:long" in running
        assert sorted(set(running) - set(hook.announced("w"))) == []
    finally:
        completions.set()
        _gate.set()
    assert await app.workflow.result(dag.id, long, timeout=30) == "long"
