"""Optional steps and defaults: a flaky enrichment may fail without failing the DAG.

``optional=True`` keeps the failure from failing the DAG; ``ref_or_default(v)`` hands
the dependent ``v`` instead, while a plain ``ref()`` skips the dependent.

# expect: enrich failed: kind=handler
# expect: combined: base+<no enrichment>
# expect: strict consumer: skipped
# expect: dag status: done
"""

from __future__ import annotations

import asyncio

import ebind
import ebind.logging
from ebind.embed import start_node
from ebind.errors import StepFailed, StepSkipped
from ebind.workflow import DAG

app = ebind.App("optional")


@app.task(name="opt.base")
async def base() -> str:
    return "base"


@app.task(name="opt.enrich", retry=ebind.RetryPolicy.none())
async def enrich() -> str:
    raise RuntimeError("enrichment service unavailable")


@app.task(name="opt.combine")
async def combine(a: str, b: str) -> str:
    return f"{a}+{b}"


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
                a = dag.step("base", base)
                e = dag.step("enrich", enrich, optional=True)
                c = dag.step("combine", combine, a.ref(), e.ref_or_default("<no enrichment>"))
                strict = dag.step("strict", combine, a.ref(), e.ref(), optional=True)
                await dag.submit(wf)
                try:
                    await wf.result(dag.id, e, timeout=30)
                except StepFailed as exc:
                    print(f"enrich failed: kind={exc.error_kind}")
                print("combined:", await wf.result(dag.id, c, timeout=30))
                try:
                    await wf.result(dag.id, strict, timeout=30)
                except StepSkipped:
                    print("strict consumer: skipped")
                meta = await wf.wait(dag.id, timeout=30)
                print("dag status:", meta.status.value)
            finally:
                await worker.stop()
                await running


if __name__ == "__main__":
    asyncio.run(main())
