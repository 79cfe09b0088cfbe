"""Breakpoints: stop a run before or after labelled steps, inspect, then continue.

Breakpoints are declared on steps (``break_before`` / ``break_after``) and armed per run
with ``submit(active_breakpoints=...)``. Independent branches keep running while a
breakpoint holds; ``resume_breakpoint`` releases what is stopped and returns how many.

# expect: side branch ran: side done
# expect: stopped: transform before [review]
# expect: released 1
# expect: stopped: load after [review]
# expect: released 1
# expect: final: LOADED HELLO
"""

from __future__ import annotations

import asyncio

import ebind
import ebind.logging
from ebind.embed import start_node
from ebind.workflow import DAG, Workflow

app = ebind.App("breakpoints")


@app.task(name="bp.text")
async def text(value: str) -> str:
    return value


@app.task(name="bp.upper")
async def upper(value: str) -> str:
    return value.upper()


@app.task(name="bp.load")
async def load(value: str) -> str:
    return f"loaded {value}"


async def wait_blocked(wf: Workflow, dag_id: str) -> str:
    while True:
        for info in await wf.list_breakpoints(dag_id):
            if info.state.value == "blocked":
                return f"{info.step_id} {info.position} [{', '.join(info.labels)}]"
        await asyncio.sleep(0.05)


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
                src = dag.step("extract", text, "hello")
                tr = dag.step("transform", upper, src.ref(), break_before=["review"])
                ld = dag.step("load", load, tr.ref(), break_after=["review"])
                final = dag.step("final", upper, ld.ref())
                side = dag.step("side", text, "side done")
                await dag.submit(wf, active_breakpoints=["review"])
                print("side branch ran:", await wf.result(dag.id, side, timeout=30))
                print("stopped:", await wait_blocked(wf, dag.id))
                print("released", await wf.resume_breakpoint(dag.id, "review"))
                print("stopped:", await wait_blocked(wf, dag.id))
                print("released", await wf.resume_breakpoint(dag.id, "review"))
                print("final:", await wf.result(dag.id, final, timeout=30))
            finally:
                await worker.stop()
                await running


if __name__ == "__main__":
    asyncio.run(main())
