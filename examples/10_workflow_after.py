"""Ordering without data: ``after=`` (skip if an upstream failed) and ``after_any=`` (always run).

# expect: notify: skipped (migrate failed)
# expect: cleanup ran: cleaned up
"""

from __future__ import annotations

import asyncio

import ebind
import ebind.logging
from ebind.embed import start_node
from ebind.errors import StepSkipped
from ebind.workflow import DAG

app = ebind.App("after")


@app.task(name="db.migrate", retry=ebind.RetryPolicy.none())
async def migrate() -> None:
    raise RuntimeError("migration 42 failed")


@app.task(name="db.notify")
async def notify() -> str:
    return "notified"


@app.task(name="db.cleanup")
async def cleanup() -> str:
    return "cleaned up"


async def main() -> None:
    ebind.logging.configure(level="critical")
    with start_node() as node:
        app.servers = [node.client_url]
        async with app:
            worker = app.worker(concurrency=4)
            running = asyncio.create_task(worker.run())
            try:
                wf = app.workflow
                dag = DAG()
                m = dag.step("migrate", migrate)
                n = dag.step("notify", notify, after=[m])
                c = dag.step("cleanup", cleanup, after_any=[m])
                await dag.submit(wf)
                try:
                    await wf.result(dag.id, n, timeout=30)
                except StepSkipped:
                    print("notify: skipped (migrate failed)")
                print("cleanup ran:", await wf.result(dag.id, c, timeout=30))
            finally:
                await worker.stop()
                await running


if __name__ == "__main__":
    asyncio.run(main())
