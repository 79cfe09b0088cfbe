"""Task benchmark: ebind end to end beside the raw nats-py floor, under both sync settings.

For each server setting (embedded node with ``sync_interval="always"`` and with the NATS
default), on the same node:

1. the floor: a producer pipelining ``publish_async`` (window 4000) into a work-queue stream,
   and a second process that ``fetch(256, timeout=0.5)``es, acks and replies on core NATS;
2. ebind: no-op tasks end to end through one ``ebind worker`` process, enqueued through the
   public API (``app.enqueue`` on 1000 concurrent lanes, every PubAck checked) and awaited
   with ``Future.result``.

Both consumers hold at most 256 messages at once: the floor fetches 256 per request, and the
worker runs with ``-c 256`` (its pull requests never ask for more than its free slots). With
``-c 16`` the worker is bound by pull round trips rather than by its cost per task (about
12k/s here against 17-19k/s at ``-c 256``); pass ``--concurrency 16`` to measure that.

Both report enqueue → all replies throughput, p50/p99 latency with one task in flight, the
consumer process's CPU µs per task and its idle RSS. The last line printed is one JSON object.

Usage: ``python bench/tasks.py [--tasks 10000] [--latency 300]``. Also importable as the App
served by the worker process (``ebind worker -A tasks:app``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ebind.app import App  # noqa: E402

sys.path.insert(0, str(HERE))
from trust import ENV_TRUST, MODES, micro, trust_options  # noqa: E402

# The worker process reads $BENCH_TRUST, so it verifies / opens what the producer sends.
app = App("bench", **trust_options())


@app.task(name="bench.noop")
async def noop() -> None:
    """Does nothing: the benchmark measures the framework around it."""


FLOOR_STREAM = "FLOOR"
FLOOR_DURABLE = "floor"
WINDOW = 4000
LANES = 1000  # concurrent enqueues on the ebind side (below nats-py's 4000 pending PubAcks)


# ---------------------------------------------------------------------- process helpers
def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _spawn(cmd: list[str], log_path: Path, trust: str = "", **kw: Any) -> subprocess.Popen[bytes]:
    # Output goes to a file, never a pipe nobody reads (a full pipe would stall the child).
    with open(log_path, "wb") as out:
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**_child_env(), ENV_TRUST: trust},
            **kw,
        )


def _wait_line(
    proc: subprocess.Popen[bytes], log_path: Path, needle: bytes, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        buf = log_path.read_bytes()
        if needle in buf:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"process exited {proc.returncode}: {buf.decode(errors='replace')}")
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {needle!r}: {buf.decode(errors='replace')}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------------- the floor
async def floor_consumer(url: str) -> None:
    """The floor's consumer process: fetch(256, 0.5), ack, reply on core NATS."""
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe_bind(FLOOR_DURABLE, stream=FLOOR_STREAM)
    print("floor.ready", flush=True)
    while True:
        try:
            msgs = await sub.fetch(256, timeout=0.5)
        except (TimeoutError, nats.errors.TimeoutError):
            continue
        for msg in msgs:
            await msg.ack()
            await nc.publish("floor.reply", msg.data)


async def _floor(
    url: str, n: int, lat_n: int, *, pipelined: bool = True, server_pid: int | None = None
) -> dict[str, float]:
    """The floor's producer: ``publish_async`` pipelined, or (not pipelined) the plain loop
    that awaits each PubAck before the next publish; with ``server_pid``, the nats-server's
    CPU per task too."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=WINDOW)
    await js.add_stream(
        StreamConfig(
            name=FLOOR_STREAM, subjects=["floor.task"], retention=RetentionPolicy.WORK_QUEUE
        )
    )
    await js.add_consumer(
        FLOOR_STREAM,
        ConsumerConfig(durable_name=FLOOR_DURABLE, ack_policy=AckPolicy.EXPLICIT, ack_wait=30),
    )
    log_path = Path(tempfile.mkstemp(prefix="ebind-bench-floor-", suffix=".log")[1])
    proc = _spawn([sys.executable, __file__, "--floor-consumer", url], log_path)
    try:
        _wait_line(proc, log_path, b"floor.ready")
        await asyncio.sleep(0.5)
        rss = _rss_mb(proc.pid)
        got = 0
        done = asyncio.get_running_loop().create_future()
        waiting: dict[bytes, asyncio.Future[None]] = {}

        async def on_reply(msg: Any) -> None:
            nonlocal got
            w = waiting.pop(msg.data, None)
            if w is not None:
                w.set_result(None)
                return
            got += 1
            if got == n and not done.done():
                done.set_result(None)

        await nc.subscribe("floor.reply", cb=on_reply)
        cpu0 = _cpu_seconds(proc.pid)
        scpu0 = _cpu_seconds(server_pid) if server_pid else 0.0
        pcpu0 = time.process_time()
        t0 = time.perf_counter()
        if pipelined:
            for i in range(n):
                await js.publish_async("floor.task", b"%d" % i)
            await js.publish_async_completed()
        else:
            for i in range(n):
                await js.publish("floor.task", b"%d" % i)
        await asyncio.wait_for(done, 120)
        elapsed = time.perf_counter() - t0
        cpu = _cpu_seconds(proc.pid) - cpu0
        pcpu = time.process_time() - pcpu0
        scpu = (_cpu_seconds(server_pid) - scpu0) if server_pid else 0.0
        lat: list[float] = []
        for i in range(lat_n):
            key = b"lat%d" % i
            fut = asyncio.get_running_loop().create_future()
            waiting[key] = fut
            s = time.perf_counter()
            await js.publish("floor.task", key)
            await asyncio.wait_for(fut, 10)
            lat.append((time.perf_counter() - s) * 1000)
        return {
            "tasks_per_s": n / elapsed,
            "p50_ms": statistics.median(lat),
            "p99_ms": _pct(lat, 0.99),
            "cpu_us_per_task": cpu / n * 1e6,
            "producer_cpu_us_per_task": pcpu / n * 1e6,
            **({"server_cpu_us_per_task": scpu / n * 1e6} if server_pid else {}),
            "idle_rss_mb": rss,
        }
    finally:
        _stop(proc)
        os.unlink(log_path)
        await js.delete_stream(FLOOR_STREAM)
        await nc.close()


# ---------------------------------------------------------------------- ebind
def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}


async def _result(fut: Any) -> Any:
    return await fut.result(30)


async def _ebind(
    url: str, n: int, lat_n: int, concurrency: int, trust: str = ""
) -> dict[str, float]:
    bench_app = App("bench-producer", nats_url=url, publish_timeout=30.0, **trust_options(trust))
    bench_app.registry.register(noop.spec)
    await bench_app.connect()
    cmd = [sys.executable, "-m", "ebind", "worker", "-A", "tasks:app", "--nats", url]
    # warning level: the per-attempt success lines are filtered (cheaply) by structlog.
    cmd += [
        "--no-scheduler",
        "-c",
        str(concurrency),
        "--log-format",
        "json",
        "--log-level",
        "warning",
    ]
    log_path = Path(tempfile.mkstemp(prefix="ebind-bench-worker-", suffix=".log")[1])
    proc = _spawn(cmd, log_path, trust, cwd=HERE)
    try:
        _wait_line(proc, log_path, b" ready")
        await asyncio.sleep(0.5)
        rss = _rss_mb(proc.pid)
        enqueue = bench_app.enqueue
        # Warm up (imports, first consumer round trips) outside the measurement.
        await asyncio.gather(*[_result(await enqueue("bench.noop")) for _ in range(200)])
        cpu0 = _cpu_seconds(proc.pid)
        pcpu0 = time.process_time()
        t0 = time.perf_counter()
        futs: list[Any] = []

        async def lane(count: int) -> None:
            # Pipelined like the floor: LANES publishes in flight, each PubAck still checked.
            for _ in range(count):
                futs.append(await enqueue("bench.noop"))

        await asyncio.gather(*[lane(n // LANES + (i < n % LANES)) for i in range(LANES)])
        await asyncio.gather(*[_result(f) for f in futs])
        elapsed = time.perf_counter() - t0
        cpu = _cpu_seconds(proc.pid) - cpu0
        pcpu = time.process_time() - pcpu0
        lat: list[float] = []
        for _ in range(lat_n):
            s = time.perf_counter()
            await _result(await enqueue("bench.noop"))
            lat.append((time.perf_counter() - s) * 1000)
        return {
            "tasks_per_s": n / elapsed,
            "p50_ms": statistics.median(lat),
            "p99_ms": _pct(lat, 0.99),
            "cpu_us_per_task": cpu / n * 1e6,
            "producer_cpu_us_per_task": pcpu / n * 1e6,
            "idle_rss_mb": rss,
        }
    finally:
        _stop(proc)
        os.unlink(log_path)
        await bench_app.close()


# ---------------------------------------------------------------------- driver
async def _setting(
    sync: str, n: int, lat_n: int, concurrency: int, trust: tuple[str, ...] = ()
) -> dict[str, dict[str, float]]:
    from ebind.embed import start_node

    with tempfile.TemporaryDirectory(prefix="ebind-bench-") as store:
        node = start_node(store_dir=store, sync_interval=sync)
        try:
            rows = {"floor": await _floor(node.client_url, n, lat_n)}
            rows["ebind"] = await _ebind(node.client_url, n, lat_n, concurrency)
            for mode in trust:  # the same run with signing / the payload codec switched on
                rows[f"+{mode}"] = await _ebind(node.client_url, n, lat_n, concurrency, mode)
        finally:
            node.shutdown()
    return rows


def _table(results: dict[str, dict[str, dict[str, float]]]) -> None:
    head = (
        f"{'setting':<9} {'system':<7} {'tasks/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'cpu µs/task':>12} {'producer µs':>12} {'idle RSS MB':>12}"
    )
    print(head)
    print("-" * len(head))
    for sync, rows in results.items():
        for system, r in rows.items():
            print(
                f"{sync:<9} {system:<7} {r['tasks_per_s']:>9.0f} {r['p50_ms']:>8.2f} "
                f"{r['p99_ms']:>8.2f} {r['cpu_us_per_task']:>12.1f} "
                f"{r['producer_cpu_us_per_task']:>12.1f} {r['idle_rss_mb']:>12.1f}"
            )
        e, f = rows["ebind"], rows["floor"]
        print(
            f"{sync:<9} ratio   throughput {e['tasks_per_s'] / f['tasks_per_s']:.2f} of floor, "
            f"p50 {e['p50_ms'] / f['p50_ms']:.2f}x floor"
        )


def main() -> None:
    import ebind.logging

    ebind.logging.configure(level="warning")  # stderr; stdout holds the report
    """Run both settings and print the table and the JSON summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--latency", type=int, default=300, help="sequential tasks for p50/p99")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=256,
        help="worker -c (default 256: the floor consumer's fetch batch, so both hold as many)",
    )
    parser.add_argument("--settings", default="always,default")
    parser.add_argument(
        "--trust",
        default=",".join(MODES),
        help="end-to-end runs with signing / the payload codec on (first setting only; '' skips)",
    )
    parser.add_argument("--floor-consumer", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_consumer:
        _run(floor_consumer(args.floor_consumer))
        return
    results: dict[str, dict[str, dict[str, float]]] = {}
    trust = tuple(m for m in args.trust.split(",") if m)
    for i, sync in enumerate(args.settings.split(",")):
        modes = trust if i == 0 else ()
        results[sync] = _run(_setting(sync, args.tasks, args.latency, args.concurrency, modes))
    print(f"worker -c {args.concurrency} (the floor consumer fetches 256 per request)")
    _table(results)
    summary: dict[str, Any] = {}
    for sync, rows in results.items():
        e, f = rows["ebind"], rows["floor"]
        summary[sync] = {
            "ebind_tasks_per_s": round(e["tasks_per_s"]),
            "floor_tasks_per_s": round(f["tasks_per_s"]),
            "ratio": round(e["tasks_per_s"] / f["tasks_per_s"], 3),
            "p50_ms": round(e["p50_ms"], 3),
            "floor_p50_ms": round(f["p50_ms"], 3),
            "p99_ms": round(e["p99_ms"], 3),
            "floor_p99_ms": round(f["p99_ms"], 3),
            "worker_cpu_us_per_task": round(e["cpu_us_per_task"], 1),
            "floor_cpu_us_per_task": round(f["cpu_us_per_task"], 1),
            "producer_cpu_us_per_task": round(e["producer_cpu_us_per_task"], 1),
            "floor_producer_cpu_us_per_task": round(f["producer_cpu_us_per_task"], 1),
            "worker_idle_rss_mb": round(e["idle_rss_mb"], 1),
        }
    main_key = "always" if "always" in summary else next(iter(summary))
    line = {
        k: summary[main_key][k]
        for k in ("ebind_tasks_per_s", "floor_tasks_per_s", "ratio", "p50_ms", "floor_p50_ms")
    }
    line["worker_concurrency"] = args.concurrency
    line.update(summary)
    line["trust"] = _trust_summary(results, trust)
    print(json.dumps(line))


def _trust_summary(
    results: dict[str, dict[str, dict[str, float]]], trust: tuple[str, ...]
) -> dict[str, Any]:
    """Per-envelope micro costs, and per-task deltas of the end-to-end runs against plain."""
    out: dict[str, Any] = {k: round(v, 2) for k, v in micro().items()}
    print(
        "per envelope: sign+verify {sign_verify_us_small:.2f} µs (1 KiB args "
        "{sign_verify_us_1k:.2f}); Fernet seal+open {seal_open_us_small:.2f} µs (1 KiB "
        "{seal_open_us_1k:.2f})".format(**out)
    )
    rows = next(iter(results.values()))
    base = rows["ebind"]
    for mode in trust:
        r = rows[f"+{mode}"]
        out[mode] = {
            "tasks_per_s": round(r["tasks_per_s"]),
            "p50_ms": round(r["p50_ms"], 3),
            "worker_cpu_us_per_task_delta": round(
                r["cpu_us_per_task"] - base["cpu_us_per_task"], 1
            ),
            "producer_cpu_us_per_task_delta": round(
                r["producer_cpu_us_per_task"] - base["producer_cpu_us_per_task"], 1
            ),
        }
    return out


def _run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


if __name__ == "__main__":
    main()
