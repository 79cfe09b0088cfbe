"""Cancel: pending steps are canceled at once; a running step may finish, nothing follows it.

# expect: dag status after cancel: canceled
# expect: extract finished anyway: 100 rows
# expect: load: canceled
"""

from __future__ import annotations

import asyncio

import ebind
import ebind.logging
from ebind.embed import start_node
from ebind.errors import StepCanceled
from ebind.workflow import DAG

app = ebind.App("cancel")
started = asyncio.Event()


@app.task(name="etl.extract")
async def extract() -> int:
    started.set()
    await asyncio.sleep(0.5)
    return 100


@app.task(name="etl.load")
async def load(rows: int) -> str:
    return f"loaded {rows}"


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
                e = dag.step("extract", extract)
                ld = dag.step("load", load, e.ref())
                await dag.submit(wf)
                await asyncio.wait_for(started.wait(), 30)
                await wf.cancel(dag.id)
                meta, _ = await wf.info(dag.id)
                print("dag status after cancel:", meta.status.value)
                print("extract finished anyway:", await wf.result(dag.id, e, timeout=30), "rows")
                try:
                    await wf.result(dag.id, ld, timeout=30)
                except StepCanceled:
                    print("load: canceled")
            finally:
                await worker.stop()
                await running


if __name__ == "__main__":
    asyncio.run(main())
