"""Worker memory: idle RSS, and RSS sampled over a long run of no-op tasks.

One embedded node (NATS default sync), one ``ebind worker -A tasks:app -c 16`` process
with the workflow scheduler on (what ``ebind worker`` runs by default). The idle RSS is
read one second after the worker reports ready; then ``--tasks`` no-op tasks run end to
end (results awaited) in ``--chunk`` sized rounds, the worker's RSS read after each. The
baseline is the RSS after the first round (imports and buffers warmed up); the run is
flat when every later sample is within 10 % of it.

One JSON line per sample, then the verdict: ``idle_rss_mb`` against the 50 MB budget and
the largest deviation from the baseline. Usage:
``python bench/memory.py [--tasks 100000] [--chunk 10000]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from load import run_noops, worker
from tasks import _rss_mb, _run, noop

from ebind.app import App

IDLE_BUDGET_MB = 50.0
FLAT = 0.10


async def _rounds(url: str, pid: int, tasks: int, chunk: int) -> list[float]:
    app = App("bench-producer", nats_url=url, publish_timeout=30.0)
    app.registry.register(noop.spec)
    await app.connect()
    samples: list[float] = []
    try:
        done = 0
        while done < tasks:
            step = min(chunk, tasks - done)
            await run_noops(app, step)
            done += step
            rss = _rss_mb(pid)
            samples.append(rss)
            print(json.dumps({"bench": "memory", "tasks_done": done, "rss_mb": round(rss, 1)}))
    finally:
        await app.close()
    return samples


def main() -> None:
    """Print the RSS samples and the verdict as JSON lines."""
    import ebind.logging
    from ebind.embed import start_node

    ebind.logging.configure(level="warning")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ebind-bench-") as store:
        node = start_node(store_dir=store, sync_interval="default")
        try:
            with worker(node.client_url, "-c", "16") as proc:
                time.sleep(1.0)
                idle = _rss_mb(proc.pid)
                print(json.dumps({"bench": "memory", "tasks_done": 0, "rss_mb": round(idle, 1)}))
                samples = _run(_rounds(node.client_url, proc.pid, args.tasks, args.chunk))
        finally:
            node.shutdown()
    base = samples[0]
    drift = max(abs(s - base) / base for s in samples)
    print(
        json.dumps(
            {
                "bench": "memory",
                "verdict": "ok" if idle <= IDLE_BUDGET_MB and drift <= FLAT else "miss",
                "idle_rss_mb": round(idle, 1),
                "idle_budget_mb": IDLE_BUDGET_MB,
                "baseline_rss_mb": round(base, 1),
                "final_rss_mb": round(samples[-1], 1),
                "max_drift": round(drift, 3),
                "flat_within": FLAT,
                "tasks": args.tasks,
            }
        )
    )


if __name__ == "__main__":
    main()
