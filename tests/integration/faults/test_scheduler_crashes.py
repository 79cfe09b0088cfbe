"""A scheduler, step hook, submit or sweep SIGKILLed at each named crash point: the DAG completes.

Each case runs real ``ebind worker`` processes (scheduler on, a 2 s lease, sweeps every
half second). The first is armed with ``EBIND_CRASHPOINT`` and dies at the point while a
diamond DAG runs; a fresh worker takes the lease over after the dead one's lapses. The DAG
must then finish with the right results, every step with one stored result and a ``done``
record, no step left running, nothing dead-lettered, and the task stream empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from ebind.app import App
from ebind.errors import DAGNotFound, TaskFailed
from ebind.inspection import lane_consumers
from ebind.streams import KV_DAGS, RESP_STREAM, TASKS_STREAM
from ebind.workflow.types import DAGStatus, StepStatus

HERE = Path(__file__).parent
ROOT = HERE.parent.parent.parent
ACK_WAIT = "1.5"

Start = Callable[..., subprocess.Popen[bytes]]


def _env(ledger: Path, crashpoint: str, extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
    env["EBIND_TEST_LEDGER"] = str(ledger)
    env.pop("EBIND_CRASHPOINT", None)
    if crashpoint:
        env["EBIND_CRASHPOINT"] = crashpoint
    return {**env, **extra}


@pytest.fixture
def workers(tmp_path: Path, nats_url: str) -> Iterator[tuple[Path, Start]]:
    """Start ``ebind worker`` processes with the scheduler on (each stopped by PID after)."""
    ledger = tmp_path / "ledger.jsonl"
    started: list[subprocess.Popen[bytes]] = []

    def start(crashpoint: str = "", **extra: str) -> subprocess.Popen[bytes]:
        n = len(started) + 1
        log = tmp_path / f"worker-{n}.log"
        cmd = [sys.executable, "-m", "ebind", "worker", "-A", "dag_crash_app:app"]
        cmd += ["--nats", nats_url, "--worker-id", f"W{n}", "--ack-wait", ACK_WAIT]
        cmd += ["--shutdown-grace", "1", "--log-format", "json"]
        with log.open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=HERE,
                env=_env(ledger, crashpoint, extra),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        proc.log = log  # type: ignore[attr-defined]
        started.append(proc)
        _wait_for(proc, '"worker.ready"')
        return proc

    with contextlib.ExitStack() as stack:
        stack.callback(lambda: [_sigkill(p) for p in started])
        yield ledger, start


def _sigkill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:  # a reaped PID may belong to someone else by now
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def _wait_for(proc: subprocess.Popen[bytes], text: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while text not in _log_of(proc):
        assert proc.poll() is None, f"worker exited {proc.returncode}:\n{_log_of(proc)}"
        assert time.monotonic() < deadline, f"no {text} from the worker:\n{_log_of(proc)}"
        time.sleep(0.05)


def _log_of(proc: subprocess.Popen[bytes]) -> str:
    log: Path = proc.log  # type: ignore[attr-defined]
    return log.read_text(errors="replace")


async def _died_at(proc: subprocess.Popen[bytes], point: str, within: float = 15.0) -> float:
    """Wait (without blocking the loop) for ``proc`` to be SIGKILLed at ``point``; returns when."""
    deadline = time.monotonic() + within
    while proc.poll() is None:
        assert time.monotonic() < deadline, f"the worker did not reach {point}"
        await asyncio.sleep(0.05)
    assert proc.returncode == -signal.SIGKILL, _log_of(proc)
    assert f"crash point {point} reached" in _log_of(proc)
    return time.monotonic()


def _runs(ledger: Path) -> Counter[str]:
    lines = ledger.read_text().splitlines() if ledger.exists() else []
    return Counter(json.loads(line)["task_id"] for line in lines if line)


@pytest.fixture
async def producer(nats_url: str) -> AsyncIterator[App]:
    """A connected App that submits and reads the test's DAGs (it runs no scheduler)."""
    from dag_crash_app import DagCrashApp, app

    async with DagCrashApp("dagcrash", nats_url=nats_url) as client:
        client.registry = app.registry
        yield client


async def _stored_results(app: App, dag_id: str) -> dict[str, int]:
    """How many result messages the store holds per step of ``dag_id`` (any run)."""
    pre = f"$KV.{KV_DAGS}.{dag_id}.result."
    info = await app.js.stream_info(f"KV_{KV_DAGS}", subjects_filter=pre + ">")
    out: Counter[str] = Counter()
    for subject, n in (info.state.subjects or {}).items():
        out[subject[len(pre) :].split(".")[0]] += n
    return dict(out)


async def _completes(app: App, ledger: Path, dag_id: str, twice: set[str], died: float) -> None:
    """The DAG finished right, each step once on record, and nothing is left behind.

    ``twice``: steps whose handler the crash may make run a second time (at-least-once);
    ``died``: when the crash was seen (the recovery time is printed from there).
    """
    from dag_crash_app import EXPECTED

    wf = app.workflow
    meta = await wf.wait(dag_id, timeout=25)
    print(f"{dag_id}: done {time.monotonic() - died:.2f} s after the crash")
    assert meta.status is DAGStatus.DONE, meta
    _, steps = await wf.info(dag_id)
    assert {s.step_id: s.status for s in steps} == dict.fromkeys(EXPECTED, StepStatus.DONE)
    for step_id, want in EXPECTED.items():
        assert await wf.result(dag_id, step_id, timeout=5) == want
    assert await _stored_results(app, dag_id) == dict.fromkeys(EXPECTED, 1)
    runs = _runs(ledger)
    for step_id in EXPECTED:
        allowed = (1, 2) if step_id in twice else (1,)
        assert runs[f"{dag_id}:{step_id}"] in allowed, (step_id, runs)
    assert await app.dlq.count() == 0
    deadline = time.monotonic() + 10
    while True:
        tasks = await app.js.stream_info(TASKS_STREAM)
        unacked = sum(c.num_ack_pending for c in await lane_consumers(app.js))
        if tasks.state.messages == 0 and unacked == 0:
            break
        assert time.monotonic() < deadline, (
            f"{tasks.state.messages} task messages, {unacked} unacked"
        )
        await asyncio.sleep(0.1)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("point", "env", "twice"),
    [
        # running is written, the handler has not run: the redelivery (or the sweep's new
        # generation for an orphaned step) runs it once more than the dead worker did.
        ("step.after_started", {}, {"a"}),
        # The same gap on the delayed start write of a step that outlives the delay.
        (
            "step.after_started",
            {"EBIND_TEST_START_WRITE_DELAY": "0.05", "EBIND_TEST_STEP_SLEEP": "0.3"},
            {"a"},
        ),
        # The result is stored, the record still running: the handler runs again and its
        # second result is dropped (identical bytes), so one result stays on record.
        ("step.after_result", {}, {"a"}),
        # The record is done, the completed event never went out: the redelivery sees the
        # finished step and publishes the event again without running the handler.
        ("step.after_done", {}, set()),
        # The leader decided to dispatch b and c and sent nothing: the next leader's sweep
        # dispatches them.
        ("dispatch.before_send", {}, set()),
    ],
    ids=["after_started", "after_started_delayed", "after_result", "after_done", "before_send"],
)
async def test_a_dag_survives_a_worker_killed_at_a_scheduler_or_step_point(
    workers: tuple[Path, Start],
    producer: App,
    point: str,
    env: dict[str, str],
    twice: set[str],
) -> None:
    from dag_crash_app import build_dag

    ledger, start = workers
    doomed = start(point, **env)
    dag_id = f"crash-{point.replace('.', '-')}"
    await build_dag(dag_id).submit(producer.workflow)
    died = await _died_at(doomed, point)
    start(**env)
    await _completes(producer, ledger, dag_id, twice, died)


@pytest.mark.timeout(60)
async def test_a_step_failed_on_record_before_its_dead_letter_still_gets_one(
    workers: tuple[Path, Start], producer: App
) -> None:
    from dag_crash_app import build_failing_dag

    ledger, start = workers
    doomed = start("step.after_failed")
    dag_id = "crash-after-failed"
    await build_failing_dag(dag_id).submit(producer.workflow)
    await _died_at(doomed, "step.after_failed")
    start()  # the redelivery finds the failure on record and stores the dead letter
    meta = await producer.workflow.wait(dag_id, timeout=25)
    assert meta.status is DAGStatus.FAILED, meta
    deadline = time.monotonic() + 10
    while not (entries := await producer.dlq.list()):
        assert time.monotonic() < deadline, "the failed step has no dead letter"
        await asyncio.sleep(0.1)
    (entry,) = entries
    assert entry.entry.task is not None and entry.entry.task.id == f"{dag_id}:bad"
    assert "bad step 3" in entry.entry.error.message
    assert _runs(ledger)[f"{dag_id}:bad"] == 1  # the redelivery did not run it again


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "point",
    [
        # The first sweep after dispatch_grace finds the step and dies before re-sending.
        "sweep.before_resend",
        # The sweep publishes a new generation first and records it after: it dies in
        # between, so a message names a dispatch the record does not show (the worker that
        # gets it waits, then the message is dropped as unproven and the sweep re-sends).
        "sweep.after_bump",
    ],
)
async def test_a_dag_survives_a_leader_killed_while_the_sweep_rescues_a_lost_step(
    workers: tuple[Path, Start], producer: App, point: str
) -> None:
    from dag_crash_app import build_dag

    ledger, start = workers
    dag_id = f"crash-{point.replace('.', '-')}"
    # No worker yet: submit dispatches the root, then its message is lost, so the step is
    # stranded (dispatched, never started) until a sweep re-sends it.
    await build_dag(dag_id).submit(producer.workflow)
    await producer.js.purge_stream(TASKS_STREAM)
    before, _ = await producer.workflow.store.get_step(dag_id, "a")
    doomed = start(point)
    died = await _died_at(doomed, point)
    after, _ = await producer.workflow.store.get_step(dag_id, "a")
    assert after.status is StepStatus.RUNNING and after.attempt == 0  # still stranded
    assert after.generation == before.generation  # no new generation recorded
    start()
    await _completes(producer, ledger, dag_id, set(), died)


@pytest.mark.timeout(60)
async def test_an_expirer_killed_before_deleting_an_expired_task_records_it_once(
    workers: tuple[Path, Start], producer: App
) -> None:
    _, start = workers
    horizon = {"EBIND_RETENTION_TASKS": "2s"}
    doomed = start("expirer.before_delete", **horizon)
    fut = await producer.apply_async("dc.add", (1, 2), target="a-claim-nobody-holds")
    died = await _died_at(doomed, "expirer.before_delete", within=20)
    with pytest.raises(TaskFailed) as caught:  # the reply went out before the crash
        await fut.result(timeout=5)
    assert caught.value.kind == "expired"
    assert (await producer.js.stream_info(TASKS_STREAM)).state.messages == 1
    start(**horizon)  # its expirer takes the lease over once the dead one's lapses
    deadline = time.monotonic() + 25
    while (await producer.js.stream_info(TASKS_STREAM)).state.messages:
        assert time.monotonic() < deadline, "the expired task was never deleted"
        await asyncio.sleep(0.2)
    print(f"expired task deleted {time.monotonic() - died:.2f} s after the crash")
    entries = await producer.dlq.list()
    assert [e.entry.error.kind for e in entries] == ["expired"]
    assert entries[0].entry.task is not None and entries[0].entry.task.id == fut.id
    # The second expirer finds the dead letter and the answer stored and adds neither.
    resp = await producer.js.stream_info(RESP_STREAM, subjects_filter=f"RESP.*.{fut.id}")
    assert resp.state.messages == 1


@pytest.mark.timeout(60)
async def test_a_producer_killed_between_step_records_and_meta_can_submit_again(
    workers: tuple[Path, Start], producer: App, nats_url: str
) -> None:
    from dag_crash_app import build_dag

    ledger, start = workers
    start()
    dag_id = "crash-submit"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "dag_crash_app.py"),
        nats_url,
        dag_id,
        cwd=HERE,
        env=_env(ledger, "submit.after_steps", {}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    died = time.monotonic()
    assert proc.returncode == -signal.SIGKILL, err.decode(errors="replace")
    assert b"crash point submit.after_steps reached" in err
    with pytest.raises(DAGNotFound):
        await producer.workflow.info(dag_id)
    assert len(await producer.workflow.store.list_steps(dag_id)) == 4  # steps, no meta
    # The producer (restarted) submits the same DAG again: it takes the orphaned records
    # over instead of refusing the id for good, and the DAG runs once.
    await build_dag(dag_id).submit(producer.workflow)
    await _completes(producer, ledger, dag_id, set(), died)
    assert _runs(ledger).total() == 4
