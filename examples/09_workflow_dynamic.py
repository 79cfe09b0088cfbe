"""Dynamic fan-out: a running step adds steps to its own DAG with ``from_context(ctx)``.

The crawler learns at run time how many pages exist, adds one step per page on the same
worker (``colocate_here=True``) and a final step that sums them. Added steps depend on
the adding step implicitly.

# expect: pages discovered: 4
# expect: total words: 4006
# expect: steps: crawl, page-0, page-1, page-2, page-3, sum
"""

from __future__ import annotations

import asyncio

import ebind
import ebind.logging
from ebind.embed import start_node
from ebind.workflow import DAG, from_context

app = ebind.App("dynamic")


@app.task(name="crawl.page")
async def count_words(page: int) -> int:
    return 1000 + page


@app.task(name="crawl.sum")
def total(xs: list[int]) -> int:
    return sum(xs)


@app.task(name="crawl.start")
async def crawl(ctx: ebind.Context, site: str) -> int:
    dag = from_context(ctx)
    assert dag is not None, "crawl runs as a DAG step"
    pages = [await dag.step(f"page-{i}", count_words, i, colocate_here=True) for i in range(4)]
    await dag.step("sum", total, [p.ref() for p in pages])
    return len(pages)


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
                root = dag.step("crawl", crawl, "example.org")
                await dag.submit(wf)
                print("pages discovered:", await wf.result(dag.id, root, timeout=30))
                print("total words:", await wf.result(dag.id, "sum", timeout=30))
                _, steps = await wf.info(dag.id)
                print("steps:", ", ".join(s.step_id for s in steps))
            finally:
                await worker.stop()
                await running


if __name__ == "__main__":
    asyncio.run(main())
