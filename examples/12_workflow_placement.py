"""Placement: run steps on a claimed target, on a named worker, or next to another step.

Two workers: ``gpu-box`` claims the logical target ``gpu``; ``cpu-box`` claims nothing
extra. ``target=`` routes to any worker claiming the target; ``colocate_with=`` to the
exact worker that ran another step; ``follow_target_of=`` re-resolves another step's
target now.

# expect: train ran on gpu-box
# expect: evaluate (colocate_with train) ran on gpu-box
# expect: export (follow_target_of train) ran on gpu-box
# expect: report (target worker:cpu-box) ran on cpu-box
"""

from __future__ import annotations

import asyncio

import ebind
import ebind.logging
from ebind.embed import start_node
from ebind.workflow import DAG, current_worker_id

app = ebind.App("placement")


@app.task(name="ml.where")
async def where(stage: str) -> str:
    return current_worker_id()


async def main() -> None:
    ebind.logging.configure(level="warning")
    with start_node() as node:
        app.servers = [node.client_url]
        async with app:
            workers = [
                app.worker(worker_id="gpu-box", claims=["gpu"], concurrency=2),
                app.worker(worker_id="cpu-box", concurrency=2),
            ]
            tasks = [asyncio.create_task(w.run()) for w in workers]
            try:
                wf = app.workflow
                dag = DAG()
                train = dag.step("train", where, "train", target="gpu")
                ev = dag.step("evaluate", where, "evaluate", colocate_with=train)
                ex = dag.step("export", where, "export", follow_target_of=train)
                rep = dag.step("report", where, "report", target="worker:cpu-box", after=[ev])
                await dag.submit(wf)
                print("train ran on", await wf.result(dag.id, train, timeout=30))
                print(
                    "evaluate (colocate_with train) ran on", await wf.result(dag.id, ev, timeout=30)
                )
                print(
                    "export (follow_target_of train) ran on",
                    await wf.result(dag.id, ex, timeout=30),
                )
                print(
                    "report (target worker:cpu-box) ran on",
                    await wf.result(dag.id, rep, timeout=30),
                )
            finally:
                for w in workers:
                    await w.stop()
                await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(main())
