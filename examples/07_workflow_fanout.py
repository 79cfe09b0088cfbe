"""Fan-out / fan-in: 10 independent squares, then one step that sums a list of their refs.

Refs may stand anywhere inside an argument, here inside a list, so one step receives
every leaf's result.

# expect: squares: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
# expect: sum of squares: 285
"""

from __future__ import annotations

import asyncio

import ebind
import ebind.logging
from ebind.embed import start_node
from ebind.workflow import DAG

app = ebind.App("fanout")


@app.task(name="math.square")
async def square(x: int) -> int:
    return x * x


@app.task(name="math.sum")
def total(xs: list[int]) -> int:
    return sum(xs)


@app.task(name="math.collect")
def collect(xs: list[int]) -> list[int]:
    return xs


async def main() -> None:
    ebind.logging.configure(level="warning")
    with start_node() as node:
        app.servers = [node.client_url]
        async with app:
            worker = app.worker(concurrency=8)
            running = asyncio.create_task(worker.run())
            try:
                wf = app.workflow
                dag = DAG()
                leaves = [dag.step(f"sq-{i}", square, i) for i in range(10)]
                both = dag.step("collect", collect, [s.ref() for s in leaves])
                out = dag.step("sum", total, [s.ref() for s in leaves])
                await dag.submit(wf)
                print("squares:", await wf.result(dag.id, both, timeout=30))
                print("sum of squares:", await wf.result(dag.id, out, timeout=30))
            finally:
                await worker.stop()
                await running


if __name__ == "__main__":
    asyncio.run(main())
