"""Results from another process: a second program that knows only the DAG and step ids.

The submitter keeps only ``(dag_id, step_id)``; a separate Python process (started here
with ``subprocess``) connects with an App that has no tasks registered and waits for the
result. The wait works before and after the step finished (the result key is watched
with history).

# expect: submitted dag report-2024
# expect: other process got: {"rows": 3, "status": "ok"}
# expect: read again after completion: {'rows': 3, 'status': 'ok'}
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import ebind
import ebind.logging
from ebind.embed import start_node
from ebind.workflow import DAG

app = ebind.App("reports")

READER = """
import asyncio, json, sys
import ebind, ebind.logging
async def main():
    ebind.logging.configure(level="critical")
    async with ebind.App("reader", nats_url=sys.argv[1]) as other:
        value = await other.workflow.result(sys.argv[2], sys.argv[3], timeout=60)
        print("other process got:", json.dumps(value, sort_keys=True))
asyncio.run(main())
"""


@app.task(name="reports.build")
async def build(rows: int) -> dict[str, object]:
    await asyncio.sleep(0.3)
    return {"rows": rows, "status": "ok"}


async def main() -> None:
    ebind.logging.configure(level="warning")
    with start_node() as node:
        app.servers = [node.client_url]
        async with app:
            dag = DAG(id="report-2024")
            dag.step("build", build, 3)
            await dag.submit(app.workflow)
            print("submitted dag", dag.id)
            reader = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                READER,
                node.client_url,
                dag.id,
                "build",
                stdout=subprocess.PIPE,
            )
            worker = app.worker(concurrency=2)
            running = asyncio.create_task(worker.run())
            try:
                out, _ = await asyncio.wait_for(reader.communicate(), 90)
                print(out.decode().strip())
                again = await app.workflow.result(dag.id, "build", timeout=10)
                print("read again after completion:", again)
            finally:
                await worker.stop()
                await running


if __name__ == "__main__":
    asyncio.run(main())
