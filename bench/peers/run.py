"""``make bench-peers``: the same no-op workloads on ebind, the raw nats-py floor and its peers.

Every row gets a fresh broker (nats-server from the project's venv, or Debian's redis-server,
both on 127.0.0.1 and a free port, Redis without persistence) and fresh workers for each
repetition; the medians of the repetitions are reported. Each peer's client and worker run
from that peer's own venv under ``bench/peers/.venvs/`` (made by the make target from the
pinned ``requirements-*.txt`` beside this file). Every process started here is stopped by
its id when the row ends, fails, times out, or the run is interrupted.

Output: one JSON line per row on stdout; ``bench/peers/results.json``; the "Against the
peers" block of ``docs/performance.md`` and the plot ``docs/img/peers.png``.

Usage: ``python bench/peers/run.py [--quick] [--reps 3] [--only ebind,celery]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VENVS = HERE / ".venvs"
sys.path.insert(0, str(HERE))

import report  # noqa: E402

EBIND_PY = Path(sys.executable)  # the project's venv runs ebind's and the floor's rows


@dataclass(frozen=True)
class Row:
    """One line of the table: which client workload against which workers and broker."""

    key: str
    system: str
    config: str  # how the tasks are sent and the worker runs, for the table
    kind: str  # "tasks" or "dag"
    broker: str  # "nats" or "redis"
    venv: str  # "" is the project's venv
    client: list[str]  # module file and workload, before the common arguments
    workers: list[list[str]]  # commands, each "{url}" replaced by the broker's address
    sync: str = "—"
    env: dict[str, str] = field(default_factory=dict)

    def python(self) -> Path:
        """The interpreter of this row's venv."""
        return VENVS / self.venv / "bin" / "python" if self.venv else EBIND_PY

    def tool(self, name: str) -> str:
        """A console script of this row's venv."""
        return str(self.python().parent / name)


def _ebind_worker(c: int) -> list[str]:
    cmd = [str(EBIND_PY), "-m", "ebind", "worker", "-A", "ebind_tasks:app", "--nats", "{url}"]
    return [*cmd, "-c", str(c), "--log-level", "warning", "--log-format", "json"]


def _celery(pool: str, c: int) -> list[str]:
    quiet = ["-l", "warning", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    celery = str(VENVS / "celery" / "bin" / "celery")
    return [celery, "-A", "celery_tasks", "worker", "-P", pool, "-c", str(c), *quiet]


def rows_for(syncs: list[str]) -> list[Row]:
    """Every row of the comparison, in table order."""
    floor = [str(EBIND_PY), "floor_tasks.py", "worker", "--url", "{url}"]
    out: list[Row] = []
    for sync in syncs:
        out += [
            Row(
                "floor-pipelined",
                "raw nats-py floor",
                "`publish_async`, 4,000 in flight; fetch(256), reply by core publish",
                "tasks",
                "nats",
                "",
                ["floor_tasks.py", "pipelined"],
                [floor],
                sync,
            ),
            Row(
                "floor-puback",
                "raw nats-py floor",
                "one PubAck awaited per publish (a plain `await` loop)",
                "tasks",
                "nats",
                "",
                ["floor_tasks.py", "puback"],
                [floor],
                sync,
            ),
            Row(
                "ebind-loop",
                "ebind",
                "`for …: await t.delay()`, `-c 16`",
                "tasks",
                "nats",
                "",
                ["ebind_tasks.py", "loop"],
                [_ebind_worker(16)],
                sync,
            ),
            Row(
                "ebind-gather",
                "ebind",
                "the same `delay()` calls under `asyncio.gather`, `-c 16`",
                "tasks",
                "nats",
                "",
                ["ebind_tasks.py", "gather"],
                [_ebind_worker(16)],
                sync,
            ),
        ]
        if sync == "default":
            out.append(
                Row(
                    "ebind-gather-2",
                    "ebind",
                    "gather, two worker processes `-c 16` each",
                    "tasks",
                    "nats",
                    "",
                    ["ebind_tasks.py", "gather"],
                    [_ebind_worker(16), _ebind_worker(16)],
                    sync,
                )
            )
    if "default" in syncs:
        out += _peer_rows()
    for sync in syncs:
        out.append(
            Row(
                "ebind-dag",
                "ebind",
                "workflow API: `DAG` of leaves + one step over their refs, `-c 64`",
                "dag",
                "nats",
                "",
                ["ebind_tasks.py", "dag"],
                [_ebind_worker(64)],
                sync,
            )
        )
    for pool, c in (("prefork", 2), ("threads", 16), ("solo", 1)):
        out.append(
            Row(
                f"celery-chord-{pool}",
                "Celery 5.7",
                f"`chord(leaves)(callback)`, `-P {pool} -c {c}`",
                "dag",
                "redis",
                "celery",
                ["celery_tasks.py", "chord"],
                [_celery(pool, c)],
            )
        )
    return out


def _peer_rows() -> list[Row]:
    rows = [
        Row(
            f"celery-{pool}",
            "Celery 5.7",
            f"`for …: t.delay()`, then `.get()` each, `-P {pool} -c {c}`",
            "tasks",
            "redis",
            "celery",
            ["celery_tasks.py", "delay"],
            [_celery(pool, c)],
        )
        for pool, c in (("prefork", 2), ("threads", 16), ("solo", 1))
    ]
    dramatiq = str(VENVS / "dramatiq" / "bin" / "dramatiq")
    taskiq = str(VENVS / "taskiq" / "bin" / "taskiq")
    taskiq_w = ["worker", "--log-level", "WARNING"]
    arq = str(VENVS / "arq" / "bin" / "arq")
    rows += [
        Row(
            "dramatiq",
            "Dramatiq 2.2",
            "`for …: a.send()`, then `get_result(block=True)`, `-p 2 -t 8` (Redis results)",
            "tasks",
            "redis",
            "dramatiq",
            ["dramatiq_tasks.py", "send"],
            [[dramatiq, "dramatiq_tasks", "-p", "2", "-t", "8"]],
        ),
        Row(
            "taskiq",
            "taskiq-nats 0.7",
            "`for …: await t.kiq()`, no results; pull broker as shipped, 2 worker processes",
            "tasks",
            "nats",
            "taskiq",
            ["taskiq_tasks.py", "fire"],
            [[taskiq, *taskiq_w[:1], "taskiq_tasks:broker", *taskiq_w[1:]]],
            "default",
        ),
        Row(
            "taskiq-results",
            "taskiq-nats 0.7",
            "the same with the object-store result backend, `wait_result(check_interval=0.005)`",
            "tasks",
            "nats",
            "taskiq",
            ["taskiq_tasks.py", "results"],
            [[taskiq, *taskiq_w[:1], "taskiq_tasks:broker_results", *taskiq_w[1:]]],
            "default",
        ),
        Row(
            "arq",
            "arq 0.28",
            "`for …: await enqueue_job()`, then `result()`; polls 5 ms, `max_jobs=16`",
            "tasks",
            "redis",
            "arq",
            ["arq_tasks.py", "enqueue"],
            [[arq, "arq_tasks.WorkerSettings", "--custom-log-dict", "arq_tasks.LOGGING"]],
        ),
    ]
    return rows


# ------------------------------------------------------------------ processes, stopped by id
STARTED: list[subprocess.Popen[bytes]] = []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env(row: Row, url: str) -> dict[str, str]:
    # ebind's rows import ebind from this checkout, not whichever one the venv installed
    paths = [str(HERE), *([str(ROOT)] if row.key.startswith("ebind") else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **row.env}
    env["REDIS_URL" if row.broker == "redis" else "NATS_URL"] = url
    return env


def _spawn(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        # Its own session, so pool children (prefork, dramatiq -p) are stopped with it.
        proc = subprocess.Popen(
            cmd,
            cwd=HERE,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    STARTED.append(proc)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group led by ``proc``'s id; SIGKILL after 10 s."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # children left behind by a leader that exited
    if proc in STARTED:
        STARTED.remove(proc)


def _redis_ready(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server on port {port} did not answer PING")


@contextlib.contextmanager
def broker(row: Row, tmp: Path) -> Iterator[tuple[str, int]]:
    """A fresh broker for one repetition: its URL and process id."""
    if row.broker == "redis":
        port = _free_port()
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        proc = _spawn([*cmd, "--appendonly", "no"], tmp / "redis.log", dict(os.environ))
        try:
            _redis_ready(port, time.monotonic() + 15)
            yield f"redis://127.0.0.1:{port}/0", proc.pid
        finally:
            _stop(proc)
        return
    from ebind.embed import start_node

    store = tempfile.mkdtemp(prefix="store-", dir=tmp)
    node = start_node(store_dir=store, sync_interval=row.sync)
    try:
        yield node.client_url, node.pid or 0
    finally:
        node.shutdown()  # stops the server by its process id
        shutil.rmtree(store, ignore_errors=True)


def _tail(path: Path, lines: int = 6) -> str:
    # A traceback's unindented lines name the exceptions, the chained causes included.
    if not path.exists():
        return ""
    text = path.read_text(errors="replace").strip().splitlines()
    return " | ".join([t for t in text if t and not t[0].isspace()][-lines:])


def _summary(path: Path) -> str:
    """The exception a client ended with, and the first one in its chain when that differs."""
    last, first = _tail(path, 1), _tail(path, 1 << 16).split(" | ")
    causes = [t for t in first if not t.startswith(("Traceback", "The above", "During"))]
    return f"{last} (from {causes[0]})" if causes and causes[0] != last else last


def one_rep(row: Row, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Broker and workers up, the client's single JSON line back, everything stopped."""
    with broker(row, tmp) as (url, server_pid):
        env = _env(row, url)
        log = tmp / f"{row.key}-workers.log"
        log.unlink(missing_ok=True)
        workers = [_spawn([c.replace("{url}", url) for c in cmd], log, env) for cmd in row.workers]
        try:
            cmd = [str(row.python()), *row.client, "--url", url, "--tasks", str(args.tasks)]
            cmd += ["--latency", str(args.latency), "--leaves", str(args.leaves)]
            cmd += ["--worker-pids", ",".join(str(w.pid) for w in workers)]
            cmd += ["--server-pid", str(server_pid)]
            client_log = tmp / f"{row.key}-client.log"
            with open(client_log, "wb") as err:
                pipes = {"stdout": subprocess.PIPE, "stderr": err}
                proc = subprocess.Popen(cmd, cwd=HERE, env=env, start_new_session=True, **pipes)
                STARTED.append(proc)
                try:
                    out, _ = proc.communicate(timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    raise RuntimeError(f"no result within {args.timeout:.0f} s") from None
                finally:
                    _stop(proc)
            if proc.returncode != 0 or not out.strip():
                print(f"{row.key}: {_tail(client_log)} / workers: {_tail(log)}", file=sys.stderr)
                # The table cell gets the exception the client ended with.
                raise RuntimeError(_summary(client_log) or f"client exited {proc.returncode}")
            dead = [w.pid for w in workers if w.poll() is not None]
            if dead:
                raise RuntimeError(f"worker(s) {dead} exited during the run: {_tail(log)}")
            result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
            return result
        finally:
            for w in workers:
                _stop(w)


def skip_reason(row: Row) -> str | None:
    """Why a row cannot run on this machine, or None."""
    if row.broker == "redis" and shutil.which("redis-server") is None:
        return "redis-server not found (Debian: apt-get install redis-server)"
    if row.venv and not row.python().exists():
        return f"no venv at bench/peers/.venvs/{row.venv} (make bench-peers creates it)"
    return None


def _head(row: Row, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "key": row.key,
        "system": row.system,
        "config": row.config,
        "kind": row.kind,
        "sync": row.sync,
        "broker": row.broker,
    }
    if row.kind == "dag":
        out["leaves"] = args.leaves
    else:
        out["tasks"] = args.tasks
    return out


def run_all(rows: list[Row], args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """Every row once per pass, ``args.reps`` passes, then each row's medians.

    Passes rather than one row's repetitions back to back: on a shared machine the load
    drifts, and spreading each row over the whole run lets every row see the same drift.
    """
    samples: list[list[dict[str, Any]]] = [[] for _ in rows]
    problems: list[dict[str, str]] = [{} for _ in rows]
    for i, row in enumerate(rows):
        reason = skip_reason(row)
        if reason:
            problems[i]["skipped"] = reason
    for rep in range(args.reps):
        for i, row in enumerate(rows):
            if problems[i]:
                continue
            try:
                samples[i].append(one_rep(row, args, tmp))
            except (RuntimeError, OSError, ValueError) as exc:
                problems[i]["error"] = str(exc)[:400]  # a row that failed once stays out
            got = samples[i][-1] if samples[i] and not problems[i] else problems[i]
            print(f"pass {rep + 1}/{args.reps} {row.key} {row.sync}: {got}", file=sys.stderr)
    return [
        {**_head(row, args), **problems[i], "reps": len(samples[i])}
        if problems[i]
        else {**_head(row, args), "reps": len(samples[i]), **report.median_of(samples[i])}
        for i, row in enumerate(rows)
    ]


def _machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({model}), Python {sys.version.split()[0]}"


def write_docs(results: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """The generated block of docs/performance.md and docs/img/peers.png."""
    page = ROOT / "docs" / "performance.md"
    page.write_text(report.replace_block(page.read_text(), report.render(results, meta)))
    report.plot(results, ROOT / "docs" / "img" / "peers.png", meta["tasks"])


def _on_term(_sig: int, _frame: Any) -> None:
    raise KeyboardInterrupt  # unwinds through every finally that stops a process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition, 1,000 tasks")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--latency", type=int, default=200)
    parser.add_argument("--leaves", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=300, help="seconds per client run")
    parser.add_argument("--settings", default="default,always", help="NATS sync settings")
    parser.add_argument("--only", default="", help="row keys starting with any of these")
    parser.add_argument("--no-docs", action="store_true", help="leave the docs page and plot")
    parser.add_argument(
        "--render",
        action="store_true",
        help="only redraw the docs block and plot from results.json",
    )
    args = parser.parse_args()
    if args.render:
        saved = json.loads((HERE / "results.json").read_text())
        write_docs(saved["rows"], saved["meta"])
        return
    if args.quick:
        args.reps, args.tasks, args.latency, args.leaves = 1, 1000, 50, 200
    signal.signal(signal.SIGTERM, _on_term)
    rows = rows_for(args.settings.split(","))
    if args.only:
        rows = [r for r in rows if r.key.startswith(tuple(args.only.split(",")))]
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _machine(),
        "load": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
        "reps": args.reps,
        "tasks": args.tasks,
        "latency": args.latency,
        "leaves": args.leaves,
    }
    with tempfile.TemporaryDirectory(prefix="ebind-peers-") as tmp:
        try:
            results = run_all(rows, args, Path(tmp))
        finally:
            for proc in list(STARTED):
                _stop(proc)
    for result in results:
        print(report.json_line(result), flush=True)
    (HERE / "results.json").write_text(
        json.dumps({"meta": meta, "rows": results}, indent=1, ensure_ascii=False) + "\n"
    )
    if not args.no_docs:
        write_docs(results, meta)
    print(f"wrote {HERE / 'results.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
