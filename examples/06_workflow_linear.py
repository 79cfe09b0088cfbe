"""A linear workflow: fetch -> enrich -> render, each step fed by the previous one's result.

Starts its own embedded nats-server and an in-process worker (which also runs the
workflow scheduler), submits the DAG and waits for the last step's typed result.

# expect: profile: Profile(user_id='u1', name='Ada', score=42)
# expect: card: [Ada] score=42
# expect: dag status: done
"""

from __future__ import annotations

import asyncio

import msgspec

import ebind
import ebind.logging
from ebind.embed import start_node
from ebind.workflow import DAG

app = ebind.App("linear")


class Profile(msgspec.Struct):
    user_id: str
    name: str
    score: int = 0


@app.task(name="users.fetch")
async def fetch(user_id: str) -> Profile:
    return Profile(user_id=user_id, name="Ada")


@app.task(name="users.enrich")
async def enrich(p: Profile) -> Profile:
    return Profile(user_id=p.user_id, name=p.name, score=42)


@app.task(name="users.render")
def render(p: Profile) -> str:
    return f"[{p.name}] score={p.score}"


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
                a = dag.step("fetch", fetch, "u1")
                b = dag.step("enrich", enrich, a.ref())
                c = dag.step("render", render, b.ref())
                await dag.submit(wf)
                print("profile:", await wf.result(dag.id, b, timeout=30))
                print("card:", await wf.result(dag.id, c, timeout=30))
                meta = await wf.wait(dag.id, timeout=30)
                print("dag status:", meta.status.value)
            finally:
                await worker.stop()
                await running


if __name__ == "__main__":
    asyncio.run(main())
