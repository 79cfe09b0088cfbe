"""Workflow fault tests on a real node: a worker killed mid-step, stranded steps."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wf_app
from wf_app import add, slow

from ebind.app import App
from ebind.streams import TASKS_STREAM
from ebind.workflow import DAG, DAGStatus, StepStatus

HERE = Path(__file__).parent


@pytest.fixture
def spawn_worker(nats_url: str, tmp_path: Path) -> Iterator[Any]:
    """Start ``wf_app.py`` worker subprocesses; every one is killed by PID at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(worker_id: str, ack_wait: float = 2.0) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "EBIND_NATS_URL": nats_url,
            "WF_LEDGER": str(tmp_path / "ledger"),
            "WF_BARRIER": str(tmp_path / "barrier"),
        }
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "wf_app.py"), worker_id, str(ack_wait)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        return proc

    try:
        yield spawn
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(5)


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


async def _ledger_has(path: Path, text: str, limit: float = 20) -> None:
    async with asyncio.timeout(limit):
        while True:
            if text in _read(path):
                return
            await asyncio.sleep(0.05)


async def _done(app: App, dag_id: str, limit: float = 40) -> None:
    async with asyncio.timeout(limit):
        while True:
            meta, _ = await app.workflow.info(dag_id)
            if meta.status.terminal:
                assert meta.status is DAGStatus.DONE
                return
            await asyncio.sleep(0.1)


@pytest.mark.timeout(90)
async def test_dag_completes_when_its_worker_is_killed_mid_step(
    app: App,
    start_worker: Any,
    spawn_worker: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wf_app, "LEDGER", str(tmp_path / "ledger"))
    victim = spawn_worker("victim")
    dag = DAG(id="a2")
    a = dag.step("a", slow, "a", 30.0)
    b = dag.step("b", add, 1, 2, after=[a])
    await dag.submit(app.workflow)
    await _ledger_has(tmp_path / "ledger", "start a")
    victim.send_signal(signal.SIGKILL)
    victim.wait(5)
    (tmp_path / "barrier").touch()  # the redelivered attempt finishes at once
    os.environ["WF_BARRIER"] = str(tmp_path / "barrier")
    try:
        await start_worker("rescuer")
        assert await app.workflow.result(dag.id, b, timeout=60) == 3
    finally:
        os.environ.pop("WF_BARRIER", None)
    await _done(app, dag.id)
    _, steps = await app.workflow.info(dag.id)
    rec = {s.step_id: s for s in steps}["a"]
    assert rec.status is StepStatus.DONE and rec.worker_id == "rescuer" and rec.attempt >= 2
    lines = _read(tmp_path / "ledger").splitlines()
    assert sum(line.startswith("start a") for line in lines) == 2
    assert sum(line.startswith("end a") for line in lines) == 1


async def test_sweep_reenqueues_a_step_whose_task_message_vanished(
    app: App, start_worker: Any
) -> None:
    dag = DAG(id="vanished")
    a = dag.step("a", add, 40, 2)
    b = dag.step("b", add, a.ref(), 0)
    await dag.submit(app.workflow)
    await app.js.purge_stream(TASKS_STREAM)  # the root's message is lost
    await start_worker("w1")
    assert await app.workflow.result(dag.id, b, timeout=30) == 42
    _, steps = await app.workflow.info(dag.id)
    assert {s.step_id: s for s in steps}["a"].generation >= 2


@pytest.mark.timeout(90)
async def test_running_step_of_a_dead_worker_with_no_message_is_rescued(
    app: App, start_worker: Any, spawn_worker: Any, tmp_path: Path
) -> None:
    victim = spawn_worker("victim", ack_wait=30.0)
    dag = DAG(id="d7")
    a = dag.step("a", slow, "a", 30.0)
    await dag.submit(app.workflow)
    await _ledger_has(tmp_path / "ledger", "start a")
    first_gen = (await app.workflow.store.get_step(dag.id, "a"))[0].generation
    victim.send_signal(signal.SIGKILL)
    victim.wait(5)
    await app.js.purge_stream(TASKS_STREAM)  # nothing JetStream could redeliver
    (tmp_path / "barrier").touch()
    os.environ["WF_BARRIER"] = str(tmp_path / "barrier")
    try:
        await start_worker("rescuer")
        assert await app.workflow.result(dag.id, a, timeout=60) == "a"
    finally:
        os.environ.pop("WF_BARRIER", None)
    _, steps = await app.workflow.info(dag.id)
    rec = steps[0]
    # A new generation (the revision the rescue was written from), not the victim's.
    assert rec.worker_id == "rescuer" and rec.generation > first_gen


@pytest.mark.timeout(60)
async def test_killed_workers_liveness_record_expires(
    app: App, spawn_worker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server removes a dead worker's record one record TTL after its last beat."""
    from test_liveness_release import listed_steps, settled

    monkeypatch.setattr(wf_app, "LEDGER", str(tmp_path / "ledger"))
    monkeypatch.setenv("WF_RECORD_TTL", "2")
    victim = spawn_worker("doomed")
    dag = DAG(id="expiring-record")
    dag.step("a", slow, "a", 30.0)
    await dag.submit(app.workflow)
    await _ledger_has(tmp_path / "ledger", "start a")
    listed = await settled(lambda: listed_steps(app, "doomed"), lambda v: bool(v), 10)
    assert listed == ["expiring-record:a"]
    victim.send_signal(signal.SIGKILL)
    victim.wait(5)
    killed = asyncio.get_running_loop().time()
    left = await settled(lambda: listed_steps(app, "doomed"), lambda v: v is None, 10)
    assert left is None, f"the killed worker's record still lists {left}"
    assert asyncio.get_running_loop().time() - killed < 4.0
