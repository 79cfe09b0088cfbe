"""Signals: a step waits for a named external event and receives its payload.

``signal_ref(name)`` passes the payload as an argument; ``wait_for_signals`` only waits.
Signals are one-shot and first-wins, and a signal sent before any step waits for it is
kept for the DAG's lifetime.

# expect: early signal delivered: True
# expect: duplicate delivered: False
# expect: build: built v1.2
# expect: deploy waiting for: approval
# expect: deploy: deployed built v1.2 (approved by ops)
"""

from __future__ import annotations

import asyncio

import msgspec

import ebind
import ebind.logging
from ebind.embed import start_node
from ebind.workflow import DAG, signal_ref

app = ebind.App("signals")


class Approval(msgspec.Struct):
    by: str


@app.task(name="ci.build")
async def build(version: str) -> str:
    return f"built {version}"


@app.task(name="ci.deploy")
async def deploy(artifact: str, approval: Approval) -> str:
    return f"deployed {artifact} (approved by {approval.by})"


async def main() -> None:
    ebind.logging.configure(level="warning")
    with start_node() as node:
        app.servers = [node.client_url]
        async with app:
            worker = app.worker(concurrency=4)
            running = asyncio.create_task(worker.run())
            try:
                wf = app.workflow
                dag = DAG()
                b = dag.step("build", build, "v1.2", wait_for_signals=["tests-green"])
                d = dag.step("deploy", deploy, b.ref(), signal_ref("approval"))
                await dag.submit(wf)
                print("early signal delivered:", await wf.signal(dag.id, "tests-green"))
                print("duplicate delivered:", await wf.signal(dag.id, "tests-green"))
                print("build:", await wf.result(dag.id, b, timeout=30))
                await asyncio.sleep(0.3)
                waiting = [s.name for s in await wf.list_signals(dag.id) if s.waiting]
                print("deploy waiting for:", ", ".join(waiting))
                await wf.signal(dag.id, "approval", Approval(by="ops"))
                print("deploy:", await wf.result(dag.id, d, timeout=30))
            finally:
                await worker.stop()
                await running


if __name__ == "__main__":
    asyncio.run(main())
