"""Workflow benchmark: fan-out/in, a 200-step chain, many small DAGs, submit scaling; two workers.

For each sync setting (``always``, the embedded default, and the server ``default``) a
fresh node and two worker *processes* are started. Reported:

* no-op task round trip (``delay`` + ``result``, one at a time) — the yardstick, measured
  in batches taken in turns with the chains, so both see the same host conditions;
* chain: seconds per step and the scheduling overhead per step (chain time per step
  minus the no-op round trip measured in the same run), and that overhead as a multiple
  of the round trip (target <= 1.5);
* fan-out/fan-in: steps per second from submit to the fan-in result;
* many small DAGs: SMALL_DAGS three-step chains submitted at once, steps per second
  from the first submit to the last result;
* submit scaling: fan-outs of 1,000 / 4,000 / 10,000 leaves (plus the fan-in step),
  the seconds ``submit`` takes (and its CPU in this process) and the whole DAG takes,
  each the median of SCALE_REPEAT submits; the 10,000-leaf submit must stay within 10x
  the 1,000-leaf one (linear);
* KV operations per step: every StateStore call made by the workers' hooks and
  schedulers (counted in the worker processes) plus those made by ``submit`` in this
  process, by operation; worker peak RSS (VmHWM) after the largest DAG;
* the reconciliation sweep with 100,000 finished DAGs in the history against the same
  sweep with none (live DAGs alike): it lists only the live index, so the two must stay
  within 2x (``python bench/workflow.py --sweep`` runs this part alone).

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

import ebind
import ebind.logging
from ebind.embed import start_node
from ebind.workflow import DAG, DAGMeta, DAGStatus, StepRecord, StepStatus

app = ebind.App("bench-wf")
CHAIN = int(os.environ.get("BENCH_CHAIN", "200"))
LEAVES = int(os.environ.get("BENCH_LEAVES", "1000"))
SMALL_DAGS = int(os.environ.get("BENCH_SMALL_DAGS", "300"))
SCALE = tuple(int(n) for n in os.environ.get("BENCH_SCALE", "1000,4000,10000").split(","))
# Each fan-out size is submitted this many times and the medians kept: a 1,000-leaf submit
# takes about 0.1 s, and one run of it moves with whatever else the two cores do.
SCALE_REPEAT = int(os.environ.get("BENCH_SCALE_REPEAT", "3"))
NOOPS = 200
CHAINS = 5
HISTORY = int(os.environ.get("BENCH_HISTORY", "100000"))
LIVE = 50
SWEEPS = 15


@app.task(name="bench.noop")
async def noop() -> None:
    return None


@app.task(name="bench.inc")
async def inc(x: int) -> int:
    return x + 1


@app.task(name="bench.sum")
def total(xs: list[int]) -> int:
    return sum(xs)


# -- worker process ---------------------------------------------------------------------------


class CountingStore:
    """Counts every StateStore call (reads and writes) made through it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: dict[str, int] = {}
        self.counting = True

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            if self.counting:
                self.calls[name] = self.calls.get(name, 0) + 1
            return attr(*args, **kwargs)

        return counted


def counted_workflow(client: ebind.App, *, scheduler: bool) -> tuple[Any, CountingStore]:
    """A Workflow on ``client`` whose store counts its calls."""
    from ebind.workflow import KVLeaseElector, NatsBus, NatsEnqueuer, NatsLiveness, NatsStore
    from ebind.workflow.workflow import Workflow

    store = CountingStore(NatsStore(client.js))
    wf = Workflow(
        store,  # type: ignore[arg-type]
        NatsBus(client.js),
        NatsEnqueuer(client.publish_task),
        elector=KVLeaseElector(client.js) if scheduler else None,
        liveness=NatsLiveness(client.js),
        registry=app.registry,
    )
    client._workflow = wf
    return wf, store


async def serve(url: str, worker_id: str, count_file: str) -> None:
    ebind.logging.configure(level=os.environ.get("BENCH_WORKER_LOG", "error"))
    app.servers = [url]
    await app.connect()
    _, store = counted_workflow(app, scheduler=True)
    worker = app.worker(worker_id=worker_id, concurrency=64, shutdown_grace=2)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, worker.request_stop)
    await worker.run()
    _write(Path(count_file), json.dumps(store.calls))
    await app.close()


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


# -- driver -----------------------------------------------------------------------------------


def _count_ops(files: list[Path], client: dict[str, int]) -> dict[str, int]:
    """Every counted StateStore call by operation, the workers' and this process's submits."""
    total = dict(client)
    for f in files:
        if f.exists():
            for name, n in json.loads(f.read_text()).items():
                total[name] = total.get(name, 0) + n
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by the processes ``pids``."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def submit(dag: DAG, client: ebind.App, counter: CountingStore) -> None:
    """Submit ``dag``, counting the submit's StateStore calls (and only those)."""
    counter.counting = True
    try:
        await dag.submit(client.workflow)
    finally:
        counter.counting = False


async def noop_round_trips(client: ebind.App, n: int) -> list[float]:
    """``n`` no-op task round trips (``delay`` + ``result``, one at a time), in seconds."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        await (await client.enqueue(noop.name)).result(timeout=30)
        samples.append(time.perf_counter() - t0)
    return samples


async def run_chain(client: ebind.App, counter: CountingStore) -> float:
    wf = client.workflow
    dag = DAG()
    prev = dag.step("s0", inc, 0)
    for i in range(1, CHAIN):
        prev = dag.step(f"s{i}", inc, prev.ref())
    t0 = time.perf_counter()
    await submit(dag, client, counter)
    assert await wf.result(dag.id, prev, timeout=300) == CHAIN
    return time.perf_counter() - t0


async def run_fan(
    client: ebind.App, counter: CountingStore, leaves: int
) -> tuple[float, float, float]:
    """(submit seconds, whole-DAG seconds, submit CPU seconds of this process) of a
    ``leaves``-leaf fan-out with a fan-in."""
    wf = client.workflow
    dag = DAG()
    steps = [dag.step(f"l{i}", inc, i) for i in range(leaves)]
    out = dag.step("sum", total, [s.ref() for s in steps])
    t0, cpu0 = time.perf_counter(), time.process_time()
    await submit(dag, client, counter)
    submitted, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    assert await wf.result(dag.id, out, timeout=600) == sum(range(1, leaves + 1))
    return submitted, time.perf_counter() - t0, cpu


async def run_many(client: ebind.App, counter: CountingStore, n: int) -> float:
    """Seconds from submitting ``n`` three-step chains at once to the last one's result."""
    wf = client.workflow
    dags = []
    for i in range(n):
        dag = DAG()
        a = dag.step("a", inc, i)
        b = dag.step("b", inc, a.ref())
        dags.append((dag, dag.step("c", inc, b.ref())))
    t0 = time.perf_counter()
    counter.counting = True
    try:
        await asyncio.gather(*(dag.submit(wf) for dag, _ in dags))
    finally:
        counter.counting = False
    got = await asyncio.gather(*(wf.result(dag.id, last, timeout=300) for dag, last in dags))
    assert got == [i + 3 for i in range(n)]
    return time.perf_counter() - t0


async def one_setting(sync: str, tmp: Path) -> dict[str, Any]:
    opts: dict[str, Any] = {} if sync == "always" else {"sync_interval": sync}
    with start_node(**opts) as node:
        client = ebind.App("bench-wf-client", nats_url=node.client_url)
        client.registry = app.registry
        counts = [tmp / f"{sync}-w{i}.json" for i in (1, 2)]
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--worker",
                node.client_url,
                f"w{i}",
                str(c),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for i, c in zip((1, 2), counts, strict=True)
        ]
        try:
            async with client:
                _, counter = counted_workflow(client, scheduler=False)
                counter.counting = False
                await noop_round_trips(client, 20)  # warm up connections and consumers
                # The host is noisy, so the yardstick and the chain are measured in turns
                # (a batch of round trips, then a chain, CHAINS times) under the same
                # conditions, and each is the median of its samples.
                trips: list[float] = []
                chains: list[float] = []
                for _ in range(CHAINS):
                    # Let the previous chain's tail (acks, finalize) settle, and drop a few
                    # warm-up trips, so the yardstick is an idle round trip as before.
                    await asyncio.sleep(0.3)
                    trips += (await noop_round_trips(client, NOOPS // CHAINS + 5))[5:]
                    chains.append(await run_chain(client, counter))
                rtt, chain = statistics.median(trips), statistics.median(chains)
                print(f"  [{sync}] no-op round trip {rtt * 1e3:.3f} ms", flush=True)
                print(f"  [{sync}] chain {chain:.3f} s (median of {CHAINS})", flush=True)
                # CPU of every process involved (server, workers, this one): the host is
                # shared, so wall time is noisy while CPU per step is not.
                pids = [node.pid or 0, os.getpid(), *(p.pid for p in procs)]
                cpu0 = cpu_seconds(pids)
                fan = (await run_fan(client, counter, LEAVES))[1]
                fan_cpu = cpu_seconds(pids) - cpu0
                print(f"  [{sync}] fan-out/in {fan:.3f} s, {fan_cpu:.2f} CPU s", flush=True)
                cpu0 = cpu_seconds(pids)
                many = await run_many(client, counter, SMALL_DAGS)
                many_cpu = cpu_seconds(pids) - cpu0
                print(f"  [{sync}] {SMALL_DAGS} small DAGs {many:.3f} s, {many_cpu:.2f} CPU s")
                scale: dict[str, list[float]] = {}
                for n in SCALE:
                    runs = [await run_fan(client, counter, n) for _ in range(SCALE_REPEAT)]
                    cols = zip(*runs, strict=True)
                    sub, whole, sub_cpu = (statistics.median(col) for col in cols)
                    scale[str(n)] = [round(sub, 3), round(whole, 3), round(sub_cpu, 3)]
                    print(
                        f"  [{sync}] {n} leaves: submit {sub:.3f} s ({sub_cpu:.3f} CPU s), "
                        f"DAG {whole:.3f} s"
                    )
                rss = [rss_mb(p.pid, "VmHWM") for p in procs]
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                await asyncio.wait_for(p.wait(), 30)
    ops = _count_ops(counts, counter.calls)
    steps = CHAINS * CHAIN + LEAVES + 1 + 3 * SMALL_DAGS + SCALE_REPEAT * sum(n + 1 for n in SCALE)
    per_step = chain / CHAIN
    return {
        "sync": sync,
        "noop_rtt_ms": round(rtt * 1e3, 3),
        "chain_ms_per_step": round(per_step * 1e3, 3),
        "chain_overhead_ms_per_step": round((per_step - rtt) * 1e3, 3),
        "chain_overhead_x_rtt": round((per_step - rtt) / rtt, 2),
        "chain_steps_per_s": round(CHAIN / chain, 1),
        "fan_steps_per_s": round((LEAVES + 1) / fan, 1),
        "fan_seconds": round(fan, 3),
        "fan_cpu_ms_per_step": round(fan_cpu * 1e3 / (LEAVES + 1), 3),
        "small_dag_cpu_ms_per_step": round(many_cpu * 1e3 / (3 * SMALL_DAGS), 3),
        "small_dags": SMALL_DAGS,
        "small_dag_steps_per_s": round(3 * SMALL_DAGS / many, 1),
        "scale_submit_and_dag_seconds": scale,
        "scale_submit_ratio": round(scale[str(SCALE[-1])][0] / scale[str(SCALE[0])][0], 2),
        # The submitter's own CPU: the wall time of a large submit also depends on how
        # much CPU the workers, busy with its first leaves, leave to it.
        "scale_submit_cpu_ratio": round(scale[str(SCALE[-1])][2] / scale[str(SCALE[0])][2], 2),
        "kv_ops_per_step": round(sum(ops.values()) / steps, 2),
        "kv_ops_by_call": {k: round(v / steps, 3) for k, v in ops.items()},
        "worker_peak_rss_mb": [round(r, 1) for r in rss],
    }


async def _write_history(client: ebind.App, n: int) -> None:
    """``n`` finished DAGs (meta, one step, its result) written straight into the bucket."""
    js = client.js
    old = datetime.now(UTC) - timedelta(days=3)
    for i in range(n):
        dag_id = f"hist-{i}"
        meta = DAGMeta(
            id=dag_id, status=DAGStatus.DONE, created_at=old, finished_at=old, run_id="r0"
        )
        step = StepRecord(
            dag_id=dag_id, step_id="a", fn_name="bench.noop", status=StepStatus.DONE, run_id="r0"
        )
        pre = f"$KV.ebind-dags.{dag_id}"
        # publish_async pipelines: it waits only when its window of unacked publishes fills.
        await js.publish_async(f"{pre}.meta", msgspec.json.encode(meta))
        await js.publish_async(f"{pre}.step.a", msgspec.json.encode(step))
        await js.publish_async(f"{pre}.result.a.r0", b"null")
    await js.publish_async_completed()


async def _median_sweep(client: ebind.App) -> tuple[float, float]:
    """Median seconds of a sweep and of ``list_dags(status=running)`` over SWEEPS runs."""
    wf = client.workflow
    sweeps, lists = [], []
    for _ in range(3):  # warm up connections, caches and the listing subscription
        await wf.scheduler.sweep()
    for _ in range(SWEEPS):
        t0 = time.perf_counter()
        swept = await wf.scheduler.sweep()
        sweeps.append(time.perf_counter() - t0)
        assert swept == LIVE, f"swept {swept} DAGs, expected {LIVE}"
        t0 = time.perf_counter()
        running = await wf.list_dags(status=DAGStatus.RUNNING)
        lists.append(time.perf_counter() - t0)
        assert len(running) == LIVE
    return statistics.median(sweeps), statistics.median(lists)


async def sweep_vs_history() -> dict[str, Any]:
    """The sweep with no history and with HISTORY finished DAGs; LIVE live DAGs in both."""
    # The server's default sync interval: an fsync per history write would take minutes.
    with start_node(sync_interval="default") as node:
        client = ebind.App("bench-wf-sweep", nats_url=node.client_url)
        client.registry = app.registry
        async with client:
            for i in range(LIVE):
                dag = DAG(id=f"live-{i}")
                dag.step("a", noop, wait_for_signals=["go"])  # stays live, nothing runs
                await dag.submit(client.workflow)
            await asyncio.sleep(1.2)  # past the window in which a sweep leaves a submit alone
            empty, list_empty = await _median_sweep(client)
            t0 = time.perf_counter()
            await _write_history(client, HISTORY)
            wrote = time.perf_counter() - t0
            full, list_full = await _median_sweep(client)
            t0 = time.perf_counter()
            metas = await client.workflow.store.list_dags()
            scan = time.perf_counter() - t0
    ratio = full / empty
    print(
        f"sweep with {LIVE} live DAGs: {empty * 1e3:.1f} ms without history, "
        f"{full * 1e3:.1f} ms with {HISTORY} finished DAGs ({ratio:.2f}x, target <= 2) | "
        f"list_dags(running) {list_empty * 1e3:.1f} / {list_full * 1e3:.1f} ms | "
        f"listing every meta (what the sweep did before) {scan * 1e3:.0f} ms for "
        f"{len(metas)} DAGs | history written in {wrote:.1f} s",
        flush=True,
    )
    return {
        "live_dags": LIVE,
        "history_dags": HISTORY,
        "sweep_ms_no_history": round(empty * 1e3, 2),
        "sweep_ms_with_history": round(full * 1e3, 2),
        "sweep_ratio": round(ratio, 2),
        "list_running_ms_no_history": round(list_empty * 1e3, 2),
        "list_running_ms_with_history": round(list_full * 1e3, 2),
        "full_meta_listing_ms": round(scan * 1e3, 1),
    }


async def main() -> None:
    ebind.logging.configure(level="error")
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"ebind-bench-wf-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    results = []
    for sync in os.environ.get("BENCH_SYNC", "always,default").split(","):
        r = await one_setting(sync, tmp)
        results.append(r)
        print(
            f"[sync={sync}] no-op rtt {r['noop_rtt_ms']} ms | chain {r['chain_ms_per_step']} "
            f"ms/step, overhead {r['chain_overhead_ms_per_step']} ms/step "
            f"({r['chain_overhead_x_rtt']}x rtt, target <= 1.5) | fan-out/in "
            f"{r['fan_steps_per_s']} steps/s ({r['fan_cpu_ms_per_step']} CPU ms/step) | "
            f"{SMALL_DAGS} small DAGs {r['small_dag_steps_per_s']} steps/s "
            f"({r['small_dag_cpu_ms_per_step']} CPU ms/step) | "
            f"submit {SCALE[-1]}/{SCALE[0]} leaves "
            f"{r['scale_submit_ratio']}x, its CPU {r['scale_submit_cpu_ratio']}x "
            f"(target <= {SCALE[-1] / SCALE[0]:g}) | "
            f"{r['kv_ops_per_step']} KV ops/step {r['kv_ops_by_call']} | "
            f"worker peak RSS {r['worker_peak_rss_mb']} MB"
        )
    sweep = await sweep_vs_history() if HISTORY else {}
    print(
        json.dumps(
            {
                "bench": "workflow",
                "chain_steps": CHAIN,
                "leaves": LEAVES,
                "runs": results,
                "sweep": sweep,
            }
        )
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        asyncio.run(serve(sys.argv[2], sys.argv[3], sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--sweep":
        ebind.logging.configure(level="error")
        print(json.dumps({"bench": "workflow-sweep", **asyncio.run(sweep_vs_history())}))
    else:
        asyncio.run(main())
