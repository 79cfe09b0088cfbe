"""ebind's side of the peer comparison: the tasks a worker serves and the client workloads.

Worker: ``ebind worker -A ebind_tasks:app --nats URL -c 16``. Client:
``python ebind_tasks.py loop|gather|dag --url URL ...`` (see common.py). Only the public API.
"""

from __future__ import annotations

import asyncio
import sys
import time

from common import measure, measure_dag, parse

import ebind
import ebind.logging
from ebind.workflow import DAG

app = ebind.App("peers")


@app.task(name="peers.noop")
async def noop() -> None:
    """Does nothing: the comparison measures the framework around it."""


@app.task(name="peers.inc")
async def inc(x: int) -> int:
    """One fan-out leaf."""
    return x + 1


@app.task(name="peers.total")
async def total(xs: list[int]) -> int:
    """The fan-in step."""
    return sum(xs)


async def loop(n: int) -> None:
    """What a Celery user writes first: one awaited ``delay()`` after another."""
    futs = [await noop.delay() for _ in range(n)]
    for f in futs:
        await f.result(timeout=120)


async def gather(n: int) -> None:
    """The same calls made concurrently with ``asyncio.gather``."""
    futs = await asyncio.gather(*(noop.delay() for _ in range(n)))
    for f in futs:
        await f.result(timeout=120)


async def one() -> None:
    """One round trip with nothing else in flight."""
    await (await noop.delay()).result(timeout=30)


async def fan(leaves: int) -> float:
    """``leaves`` independent steps and one step that sums them; returns the submit time."""
    dag = DAG()
    steps = [dag.step(f"l{i}", inc, i) for i in range(leaves)]
    out = dag.step("sum", total, [s.ref() for s in steps])
    t0 = time.perf_counter()
    await dag.submit(app.workflow)
    submit = time.perf_counter() - t0
    assert await app.workflow.result(dag.id, out, timeout=300) == sum(range(1, leaves + 1))
    return submit


def main() -> None:
    ebind.logging.configure(level="error")
    workload, args = sys.argv[1], parse(sys.argv[2:])
    app.servers = [args.url]
    with asyncio.Runner() as runner:
        runner.run(app.connect())
        if workload == "dag":
            measure_dag(args, lambda n: runner.run(fan(n)))
        else:
            batch = loop if workload == "loop" else gather
            measure(args, lambda n: runner.run(batch(n)), lambda: runner.run(one()))
        runner.run(app.close())


if __name__ == "__main__":
    main()
