"""Pause and resume: in-flight steps finish, nothing new starts until ``resume``.

# expect: after pause: pausing
# expect: settled: paused
# expect: step 2 while paused: pending
# expect: after resume: step 3 -> 3
# expect: dag status: done
"""

from __future__ import annotations

import asyncio

import ebind
import ebind.logging
from ebind.embed import start_node
from ebind.workflow import DAG, DAGStatus, Workflow

app = ebind.App("pause")
gate = asyncio.Event()


@app.task(name="pipe.step")
async def step(n: int, prev: int = 0) -> int:
    if n == 1:
        await gate.wait()
    return n


async def status(wf: Workflow, dag_id: str) -> str:
    meta, _ = await wf.info(dag_id)
    return str(meta.status.value)


async def main() -> None:
    ebind.logging.configure(level="warning")
    with start_node() as node:
        app.servers = [node.client_url]
        async with app:
            worker = app.worker(concurrency=2)
            running = asyncio.create_task(worker.run())
            try:
                wf = app.workflow
                dag = DAG()
                s1 = dag.step("s1", step, 1)
                s2 = dag.step("s2", step, 2, s1.ref())
                s3 = dag.step("s3", step, 3, s2.ref())
                await dag.submit(wf)
                await asyncio.sleep(0.3)  # s1 is running
                await wf.pause(dag.id)
                print("after pause:", await status(wf, dag.id))
                gate.set()  # s1 completes; the DAG settles into paused
                meta = await wf.wait(dag.id, until=[DAGStatus.PAUSED], timeout=30)
                print("settled:", meta.status.value)
                await asyncio.sleep(0.5)
                _, steps = await wf.info(dag.id)
                print("step 2 while paused:", {s.step_id: s.status.value for s in steps}["s2"])
                await wf.resume(dag.id)
                print("after resume: step 3 ->", await wf.result(dag.id, s3, timeout=30))
                print("dag status:", (await wf.wait(dag.id, timeout=30)).status.value)
            finally:
                await worker.stop()
                await running


if __name__ == "__main__":
    asyncio.run(main())
