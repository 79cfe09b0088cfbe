"""A stale worker and a stale scheduler leader, as real processes paused with SIGSTOP.

A worker paused past ``ack_wait`` loses its message to another worker, which runs the task
again; when the first one is resumed it finishes its run, but whatever it then tries to
record (a result, a dead letter, a DAG step's outcome, an ack) must not add a second outcome
to the one already recorded. A scheduler leader paused past its lease is replaced; when it
is resumed it must step down on its next renewal, and nothing it does meanwhile may run a
step twice or lose one.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ebind.app import App
from ebind.errors import TaskFailed
from ebind.streams import RESP_STREAM

HERE = Path(__file__).parent
ROOT = HERE.parent.parent.parent
ACK_WAIT = 1.5

pytestmark = pytest.mark.timeout(90)


@dataclass
class Procs:
    """``ebind worker`` processes serving ``app_ref``; each one is stopped by PID at the end."""

    nats_url: str
    tmp: Path
    started: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    app_ref: str = "stale_app:app"

    @property
    def ledger(self) -> Path:
        """The file every handler run appends its start and end lines to."""
        return self.tmp / "ledger.jsonl"

    def log(self, worker_id: str) -> Path:
        """The worker's JSON log lines."""
        return self.tmp / f"{worker_id}.log"

    def start(self, worker_id: str, *, scheduler: bool = False) -> subprocess.Popen[bytes]:
        """Start worker ``worker_id`` and wait until it is ready."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
        env["EBIND_TEST_LEDGER"] = str(self.ledger)
        env.pop("EBIND_CRASHPOINT", None)
        cmd = [sys.executable, "-m", "ebind", "worker", "-A", self.app_ref]
        cmd += ["--nats", self.nats_url, "--worker-id", worker_id, "-c", "4"]
        cmd += ["--ack-wait", str(ACK_WAIT), "--shutdown-grace", "1", "--log-format", "json"]
        if not scheduler:
            cmd.append("--no-scheduler")
        with self.log(worker_id).open("ab") as out:
            proc = subprocess.Popen(
                cmd, cwd=HERE, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        self.started[worker_id] = proc
        deadline = time.monotonic() + 20
        while not self.events(worker_id, "worker.ready"):
            assert proc.poll() is None, f"{worker_id} exited:\n{self.log(worker_id).read_text()}"
            assert time.monotonic() < deadline, f"{worker_id} not ready"
            time.sleep(0.05)
        return proc

    def events(self, worker_id: str, name: str) -> list[dict[str, Any]]:
        """The worker's log lines whose event is ``name``."""
        path = self.log(worker_id)
        found = []
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == name:
                found.append(record)
        return found

    def pause(self, worker_id: str) -> None:
        """SIGSTOP the worker."""
        os.kill(self.started[worker_id].pid, signal.SIGSTOP)

    def resume(self, worker_id: str) -> None:
        """SIGCONT the worker."""
        os.kill(self.started[worker_id].pid, signal.SIGCONT)

    def runs(self) -> list[dict[str, Any]]:
        """Every ledger line so far."""
        text = self.ledger.read_text() if self.ledger.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line]

    def close(self) -> None:
        """Stop every process started here, by PID."""
        for proc in self.started.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


def fleet(nats_url: str, tmp: Path, app_ref: str = "stale_app:app") -> Iterator[Procs]:
    """Worker processes serving ``app_ref``, all stopped afterwards (for a fixture)."""
    procs = Procs(nats_url, tmp, app_ref=app_ref)
    try:
        yield procs
    finally:
        procs.close()


@pytest.fixture
def procs(nats_url: str, tmp_path: Path) -> Iterator[Procs]:
    """The test's worker processes."""
    yield from fleet(nats_url, tmp_path)


@pytest.fixture
async def producer(nats_url: str) -> AsyncIterator[App]:
    """A connected App that knows ``stale_app``'s tasks (and its short workflow intervals)."""
    from stale_app import StaleApp
    from stale_app import app as stale_app

    app = StaleApp("stale", nats_url=nats_url)
    app.registry = stale_app.registry
    await app.connect()
    try:
        yield app
    finally:
        await app.close()


async def _until(cond: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, f"{what} did not happen within {within}s"
        await asyncio.sleep(0.05)


def _started(procs: Procs, task_id: str, pid: int) -> Callable[[], bool]:
    return lambda: any(
        r["task_id"] == task_id and r["pid"] == pid and r["phase"] == "start" for r in procs.runs()
    )


def _ended(procs: Procs, task_id: str, pid: int) -> Callable[[], bool]:
    return lambda: any(
        r["task_id"] == task_id and r["pid"] == pid and r["phase"] == "end" for r in procs.runs()
    )


async def _stored_responses(app: App, task_id: str) -> int:
    info = await app.js.stream_info(RESP_STREAM, subjects_filter=f"RESP.{app.client_id}.>")
    return sum(n for s, n in (info.state.subjects or {}).items() if s.endswith(f".{task_id}"))


async def _take_over(procs: Procs, producer: App, name: str, x: int) -> tuple[str, Any]:
    """Run task ``name(x)`` on W1, pause W1 mid-run, let W2 take the task over.

    Returns the task id and what its waiter received (the value, or the TaskFailed) once the
    takeover recorded an outcome; W1 is then resumed and has finished its own run.
    """
    w1 = procs.start("W1")
    fut = await producer.apply_async(name, (x,))
    await _until(_started(procs, fut.id, w1.pid), 20, "W1 starting the task")
    procs.pause("W1")
    w2 = procs.start("W2")  # after the pause, so only a redelivery can reach it
    try:
        got: Any = await fut.result(timeout=30)
    except TaskFailed as exc:
        got = exc
    assert _ended(procs, fut.id, w2.pid)(), "the waiter's answer did not come from W2"
    procs.resume("W1")
    t0 = time.monotonic()
    await _until(_ended(procs, fut.id, w1.pid), 10, "W1 finishing its stale run")
    await _until(lambda: bool(procs.events("W1", "task.outcome_fenced")), 10, "W1 fenced")
    print(f"stale worker ({name}): resume to its late outcome fenced {time.monotonic() - t0:.2f}s")
    return fut.id, got


async def _recorded(producer: App, task_id: str, name: str) -> Any:
    """What a waiter that asks now reads from the stream: the value, or the TaskFailed."""
    try:
        return await producer.future(task_id, name=name).result(timeout=5)
    except TaskFailed as exc:
        return exc


async def test_a_stale_workers_late_result_is_fenced(procs: Procs, producer: App) -> None:
    task_id, got = await _take_over(procs, producer, "st.slow", 21)
    assert got == 42
    assert await _stored_responses(producer, task_id) == 1
    assert await _recorded(producer, task_id, "st.slow") == 42
    assert await producer.dlq.count() == 0


async def test_a_stale_workers_late_dead_letter_is_fenced(procs: Procs, producer: App) -> None:
    # W1's run fails for good, but only after W2's run of the same task succeeded.
    task_id, got = await _take_over(procs, producer, "st.first_fails", 5)
    assert got == 10
    assert await _stored_responses(producer, task_id) == 1
    assert await _recorded(producer, task_id, "st.first_fails") == 10
    assert await producer.dlq.count() == 0


async def test_a_stale_workers_late_success_after_a_dead_letter_is_fenced(
    procs: Procs, producer: App
) -> None:
    # W2's run failed for good (dead letter, TaskFailed); W1's stale run then succeeds.
    task_id, got = await _take_over(procs, producer, "st.first_succeeds", 6)
    assert isinstance(got, TaskFailed) and "delivery 2 of 6 refuses" in str(got)
    assert await _stored_responses(producer, task_id) == 1
    assert isinstance(await _recorded(producer, task_id, "st.first_succeeds"), TaskFailed)
    assert [e.entry.task.id for e in await producer.dlq.list() if e.entry.task] == [task_id]


def _scheduler_events(procs: Procs, worker_id: str) -> list[dict[str, Any]]:
    """The worker's scheduler lease events (acquired, lost, released), in order."""
    path = procs.log(worker_id)
    found = []
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if str(record.get("event", "")).startswith("leader.") and record.get("key") == "scheduler":
            found.append(record)
    return found


async def test_a_stale_workers_late_step_outcome_is_fenced(procs: Procs, producer: App) -> None:
    from ebind.workflow import DAG, StepStatus

    scheduler = asyncio.create_task(producer.workflow.run_scheduler())
    try:
        w1 = procs.start("W1")
        dag = DAG(id="stale-step")
        a = dag.step("a", "st.step", 1)
        b = dag.step("b", "st.step", a.ref())
        await dag.submit(producer.workflow)
        step_a = f"{dag.id}:a"
        await _until(_started(procs, step_a, w1.pid), 20, "W1 starting step a")
        procs.pause("W1")
        w2 = procs.start("W2")
        await _until(_ended(procs, step_a, w2.pid), 20, "W2 running step a")
        procs.resume("W1")
        await _until(_ended(procs, step_a, w1.pid), 10, "W1 finishing its stale run")
        await _until(lambda: bool(procs.events("W1", "step.outcome_fenced")), 10, "W1 fenced")
        assert await producer.workflow.result(dag.id, b, timeout=30) == 3
        meta = await producer.workflow.wait(dag.id, timeout=10)
    finally:
        scheduler.cancel()
        await asyncio.gather(scheduler, return_exceptions=True)
    assert meta.status.value == "done"
    _, steps = await producer.workflow.info(dag.id)
    rec = {s.step_id: s for s in steps}["a"]
    assert rec.status is StepStatus.DONE and rec.worker_id == "W2"
    assert await producer.workflow.result(dag.id, a, timeout=5) == 2
    runs = [r for r in procs.runs() if r["phase"] == "start"]
    assert sorted((r["task_id"], r["pid"]) for r in runs if r["task_id"] == step_a) == sorted(
        [(step_a, w1.pid), (step_a, w2.pid)]
    )
    assert len([r for r in runs if r["task_id"] == f"{dag.id}:b"]) == 1
    assert await producer.dlq.count() == 0


async def test_a_stale_leader_steps_down_and_runs_no_step_twice(
    procs: Procs, producer: App
) -> None:
    from chaos_app import LEASE_TTL

    from ebind.workflow import DAG

    old = procs.start("L", scheduler=True)
    await _until(lambda: bool(_scheduler_events(procs, "L")), 20, "L leading")
    procs.start("F", scheduler=True)
    dag = DAG(id="stale-leader")
    prev = dag.step("s0", "st.step", 0)
    for n in range(1, 6):
        prev = dag.step(f"s{n}", "st.step", prev.ref())
    await dag.submit(producer.workflow)
    await _until(
        lambda: any(r["task_id"] == f"{dag.id}:s1" for r in procs.runs()), 20, "the chain moving"
    )
    paused_at = time.time()
    procs.pause("L")
    t0 = time.monotonic()
    await _until(lambda: bool(_scheduler_events(procs, "F")), 3 * LEASE_TTL, "F taking over")
    takeover = time.monotonic() - t0
    await asyncio.sleep(LEASE_TTL)  # F dispatches while L is still paused
    resumed_at = time.time()
    procs.resume("L")
    t1 = time.monotonic()
    await _until(
        lambda: _scheduler_events(procs, "L")[-1]["event"] == "leader.lost", 10, "L stepping down"
    )
    step_down = time.monotonic() - t1
    assert await producer.workflow.result(dag.id, prev, timeout=40) == 6
    meta = await producer.workflow.wait(dag.id, timeout=10)
    assert meta.status.value == "done"
    assert [e["event"] for e in _scheduler_events(procs, "F")] == ["leader.acquired"]
    lost = _scheduler_events(procs, "L")[-1]
    # Each step ran once, apart from the run L had in hand when it was paused (which its
    # ack_wait handed to F); a stale dispatch by L would show as a second run.
    starts = [r for r in procs.runs() if r["phase"] == "start"]
    ends = [r for r in procs.runs() if r["phase"] == "end"]
    for n in range(6):
        task_id = f"{dag.id}:s{n}"
        mine = [r for r in starts if r["task_id"] == task_id]
        interrupted = [
            r
            for r in mine
            if r["pid"] == old.pid
            and r["at"] < paused_at
            and not any(
                e["task_id"] == task_id and e["pid"] == old.pid and e["at"] < paused_at
                for e in ends
            )
        ]
        assert len(mine) - len(interrupted) == 1, f"step s{n} ran {len(mine)} times: {mine}"
    assert await producer.dlq.count() == 0
    print(
        f"stale leader: follower took over {takeover:.2f}s after the pause; the resumed leader "
        f"stepped down {step_down:.2f}s after SIGCONT ({lost.get('reason', 'renew refused')}); "
        f"paused {resumed_at - paused_at:.1f}s"
    )
