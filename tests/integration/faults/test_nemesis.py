"""A seeded nemesis: faults every few seconds under load, then heal and check the invariants.

Three ``ebind worker`` processes (scheduler on, a 2 s lease) serve a file-backed node while
the test enqueues plain tasks (some fail on purpose) and submits DAGs (fan-out, fan-in, an
optional failing step, a signal). Every 2–5 s the nemesis picks one fault: SIGKILL a worker,
SIGSTOP it past ack_wait then SIGCONT, SIGKILL the scheduler leader, SIGKILL and restart the
server, or restart a worker armed with a crash point. At the end everything is healed and
the run must reach quiescence with these invariants:

- no loss: every accepted task has exactly one outcome (its result, or TaskFailed with a
  dead letter), every DAG finishes with the expected result;
- bounded duplicates: no task runs more often than the faults could explain, and none has
  more than one stored response;
- nothing stuck: no step left running, the task stream empty and nothing unacknowledged;
- typed errors: every failure the client saw is an ebind error or a timeout.

The seed and the fault schedule are printed; ``EBIND_NEMESIS_SEED`` replays a run and
``EBIND_NEMESIS_SECONDS`` changes its length (the ``slow`` variant runs ten minutes).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ebind.app import App
from ebind.crashpoints import POINTS
from ebind.embed import Node
from ebind.errors import EbindError, TaskFailed
from ebind.future import Future
from ebind.inspection import lane_consumers
from ebind.streams import RESP_STREAM, TASKS_STREAM

HERE = Path(__file__).parent
ROOT = HERE.parent.parent.parent
WORKERS = 3
ACK_WAIT = 1.5
WORKER_POINTS = [p for p in POINTS if p.startswith("worker.")]


@dataclass
class Fleet:
    """The worker processes of one run; every PID it started is stopped by ``close``."""

    nats_url: str
    tmp: Path
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    paused: set[int] = field(default_factory=set)
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def ledger(self) -> Path:
        """The file every handler run appends a line to."""
        return self.tmp / "ledger.jsonl"

    def log(self, i: int) -> Path:
        """Worker ``i``'s combined stdout and stderr."""
        return self.tmp / f"worker-{i}.log"

    def start(self, i: int, crashpoint: str = "") -> None:
        """Start worker ``i`` (replacing a dead one), optionally armed with a crash point."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
        env["EBIND_TEST_LEDGER"] = str(self.ledger)
        env.pop("EBIND_CRASHPOINT", None)
        if crashpoint:
            env["EBIND_CRASHPOINT"] = crashpoint
        cmd = [sys.executable, "-m", "ebind", "worker", "-A", "chaos_app:app"]
        cmd += ["--nats", self.nats_url, "--worker-id", f"W{i}", "-c", "8"]
        cmd += ["--ack-wait", str(ACK_WAIT), "--shutdown-grace", "1", "--log-format", "json"]
        with self.log(i).open("ab") as out:
            proc = subprocess.Popen(
                cmd, cwd=HERE, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        self.procs[i] = proc
        self.started.append(proc)

    def alive(self, i: int) -> bool:
        """Whether worker ``i``'s current process runs."""
        return self.procs[i].poll() is None

    def kill(self, i: int) -> None:
        """SIGKILL worker ``i`` (a paused one is continued first so it really dies)."""
        proc = self.procs[i]
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        self.paused.discard(i)

    def pause(self, i: int) -> None:
        """SIGSTOP worker ``i``."""
        if self.alive(i):
            os.kill(self.procs[i].pid, signal.SIGSTOP)
            self.paused.add(i)

    def resume(self, i: int) -> None:
        """SIGCONT worker ``i``."""
        if i in self.paused and self.alive(i):
            os.kill(self.procs[i].pid, signal.SIGCONT)
        self.paused.discard(i)

    def leader(self) -> int | None:
        """A live worker whose log last says it acquired the scheduler lease (None if none)."""
        for i in self.procs:
            if not self.alive(i):
                continue
            last = ""
            for line in self.log(i).read_text(errors="replace").splitlines():
                if '"leader.' in line:
                    try:
                        last = str(json.loads(line).get("event", ""))
                    except ValueError:
                        continue
            if last == "leader.acquired":
                return i
        return None

    def heal(self) -> None:
        """Continue every paused worker and restart every dead one, unarmed."""
        for i in list(self.procs):
            self.resume(i)
            if not self.alive(i):
                self.start(i)

    def close(self) -> None:
        """Stop every process this fleet started, by PID."""
        for proc in self.started:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


@dataclass
class Run:
    """What the client side of one run accepted and saw."""

    futures: dict[str, tuple[str, int, Future[Any]]] = field(default_factory=dict)
    dags: dict[str, int] = field(default_factory=dict)  # dag id -> expected result
    errors: Counter[str] = field(default_factory=Counter)  # client-visible error types
    untyped: list[str] = field(default_factory=list)
    schedule: list[str] = field(default_factory=list)

    def saw(self, exc: BaseException) -> None:
        """Record a client-visible failure; anything not typed is an invariant breach."""
        self.errors[type(exc).__name__] += 1
        if not isinstance(exc, EbindError | TimeoutError):
            self.untyped.append(repr(exc))


async def _until_ok(run: Run, op: Callable[[], Awaitable[Any]], within: float = 60.0) -> Any:
    """Retry ``op`` (idempotent: same task id / signal) until it succeeds."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await op()
        except Exception as exc:
            run.saw(exc)
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _load(app: App, run: Run, rng: random.Random, seconds: float, lock: asyncio.Lock) -> None:
    """Enqueue about 500 tasks and submit about 30 DAGs spread over ``seconds``."""
    from ebind.workflow import DAG, signal_ref

    task_chance, dag_every = min(1.0, 500 / (seconds * 10)), max(1, int(seconds * 10 / 30))
    end, tick = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        if rng.random() < task_chance:
            n = len(run.futures)
            name = "ch.fail" if rng.random() < 0.1 else "ch.work"
            task_id = f"t{n}"

            def enqueue(name: str = name, n: int = n, task_id: str = task_id) -> Awaitable[Any]:
                return app.apply_async(name, (n,), task_id=task_id)

            run.futures[task_id] = (name, n, await _until_ok(run, enqueue))
        if tick % dag_every == 0:
            k = len(run.dags)
            dag = DAG(id=f"d{k}")
            root = dag.step("root", "ch.work", k)
            leaves = [dag.step(f"leaf{j}", "ch.work", root.ref()) for j in range(3)]
            bad = dag.step("bad", "ch.fail", k, optional=True)
            dag.step(
                "total",
                "ch.total",
                [leaf.ref() for leaf in leaves],
                bad.ref_or_default(100),
                signal_ref("go"),
            )
            async with lock:  # a half-written submit is the sweep's job, not this test's
                await _until_ok(run, lambda dag=dag: dag.submit(app.workflow), within=5)
            run.dags[dag.id] = 3 * (9 * k) + 100 + k  # root 3k, leaves 9k each

            def go(dag_id: str = dag.id, k: int = k) -> Awaitable[Any]:
                return app.workflow.signal(dag_id, "go", {"add": k})

            await _until_ok(run, go)
        tick += 1
        await asyncio.sleep(0.1)


async def _nemesis(
    node: Node, fleet: Fleet, run: Run, rng: random.Random, seconds: float, lock: asyncio.Lock
) -> None:
    """Inject one fault every 2–5 s until ``seconds`` have passed."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        await asyncio.sleep(rng.uniform(2.0, 5.0))
        now = time.monotonic()
        fleet.heal()  # what a supervisor does: dead workers come back
        fault, i = (
            rng.choice(["kill", "pause", "leader", "server", "crash"]),
            rng.randrange(WORKERS),
        )
        stamp = f"{now - start:6.1f}s"
        if fault == "kill":
            fleet.kill(i)
        elif fault == "pause":
            fleet.pause(i)
            await asyncio.sleep(rng.uniform(0.5, 2 * ACK_WAIT))
            fleet.resume(i)
        elif fault == "leader":
            leader = fleet.leader()
            i = leader if leader is not None else i
            fleet.kill(i)
        elif fault == "server":
            async with lock:
                node.kill()
                await asyncio.sleep(rng.uniform(0.2, 1.0))
                node.restart()
        else:
            point = f"{rng.choice(WORKER_POINTS)}@{rng.randint(1, 5)}"
            fleet.kill(i)
            fleet.start(i, point)
            fault = f"crash {point}"
        run.schedule.append(f"{stamp} {fault} W{i}" if fault != "server" else f"{stamp} server")


async def _quiet(app: App, run: Run, within: float) -> dict[str, Any]:
    """Wait for every outcome; returns task id -> result or the TaskFailed."""
    outcomes: dict[str, Any] = {}

    async def one(task_id: str, fut: Future[Any]) -> None:
        try:
            outcomes[task_id] = await fut.result(timeout=within)
        except TaskFailed as exc:
            outcomes[task_id] = exc

    await asyncio.gather(*(one(t, f) for t, (_, _, f) in run.futures.items()))
    for dag_id in run.dags:
        await _until_ok(run, lambda d=dag_id: app.workflow.wait(d, timeout=within), within)
    deadline = time.monotonic() + within
    while True:
        tasks = await app.js.stream_info(TASKS_STREAM)
        lanes = await lane_consumers(app.js)
        unacked = sum(c.num_ack_pending for c in lanes)
        pending = sum(c.num_pending for c in lanes)
        if tasks.state.messages == 0 and unacked == 0 and pending == 0:
            return outcomes
        assert time.monotonic() < deadline, (
            f"no quiescence: {tasks.state.messages} task messages, "
            f"{unacked} unacked, {pending} pending"
        )
        await asyncio.sleep(0.2)


def _runs(ledger: Path) -> Counter[str]:
    lines = ledger.read_text().splitlines() if ledger.exists() else []
    return Counter(json.loads(line)["task_id"] for line in lines if line)


async def _check(app: App, fleet: Fleet, run: Run, outcomes: dict[str, Any]) -> None:
    # No loss: each accepted task has one outcome, the right one; failures have dead letters.
    failed = set()
    for task_id, (name, n, _) in run.futures.items():
        got = outcomes[task_id]
        if isinstance(got, TaskFailed):
            failed.add(task_id)
            if name == "ch.work":  # only a crash loop past its attempts may fail it
                assert got.error.kind == "worker_lost", f"{task_id}: {got}"
        else:
            assert name == "ch.work" and got == 3 * n, f"{task_id}: {got!r}"
    dead = {e.entry.task.id for e in await app.dlq.list(limit=10_000) if e.entry.task}
    plain_dead = {t for t in dead if t in run.futures}
    assert plain_dead == failed, f"dead letters {plain_dead ^ failed} do not match failures"
    # One recorded outcome: a late answer from a stale or crashed delivery is never stored.
    info = await app.js.stream_info(RESP_STREAM, subjects_filter=f"RESP.{app.client_id}.>")
    answers = {s.rsplit(".", 1)[-1]: n for s, n in (info.state.subjects or {}).items()}
    twice = {t: n for t, n in answers.items() if t in run.futures and n != 1}
    assert not twice, f"tasks with more than one stored response: {twice}"
    # Every DAG finished with the expected result and no step is left running.
    for dag_id, want in run.dags.items():
        meta, steps = await app.workflow.info(dag_id)
        assert meta.status.value == "done", f"{dag_id}: {meta.status}"
        assert not [s.step_id for s in steps if s.status.value == "running"]
        assert await app.workflow.result(dag_id, "total", timeout=10) == want
        assert f"{dag_id}:bad" in dead  # the optional step's failure is on record too
    # Bounded duplicates: re-runs only where a fault could have caused them.
    runs = _runs(fleet.ledger)
    faults = len(run.schedule)
    too_many = {t: c for t, c in runs.items() if c > 1 + faults}
    assert not too_many, f"tasks run more often than {faults} faults explain: {too_many}"
    # Typed errors only.
    assert not run.untyped, f"untyped client errors: {run.untyped[:5]}"


async def _nemesis_run(nats_node: Node, tmp_path: Path, seconds: float) -> None:
    seed = int(os.environ.get("EBIND_NEMESIS_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    print(f"nemesis seed={seed} seconds={seconds} (replay: EBIND_NEMESIS_SEED={seed})")
    fleet = Fleet(nats_node.client_url, tmp_path)
    app = App(
        "chaos",
        nats_url=nats_node.client_url,
        publish_timeout=2.0,
        reconnect_time_wait=0.2,
        max_reconnect_attempts=-1,
    )
    from chaos_app import app as chaos_app

    app.registry = chaos_app.registry
    run = Run()
    lock = asyncio.Lock()
    try:
        for i in range(WORKERS):
            fleet.start(i)
        await app.connect()
        await asyncio.gather(
            _load(app, run, rng, seconds, lock),
            _nemesis(nats_node, fleet, run, rng, seconds, lock),
        )
        fleet.heal()
        outcomes = await _quiet(app, run, within=120.0)
        await _check(app, fleet, run, outcomes)
    finally:
        print("fault schedule:\n  " + "\n  ".join(run.schedule or ["(none)"]))
        print(f"tasks={len(run.futures)} dags={len(run.dags)} client errors={dict(run.errors)}")
        fleet.close()
        await app.close()


@pytest.mark.timeout(420)
async def test_nemesis(nats_node: Node, tmp_path: Path) -> None:
    await _nemesis_run(nats_node, tmp_path, float(os.environ.get("EBIND_NEMESIS_SECONDS", "60")))


@pytest.mark.slow
@pytest.mark.timeout(1200)
async def test_nemesis_long(nats_node: Node, tmp_path: Path) -> None:
    await _nemesis_run(nats_node, tmp_path, 600.0)
