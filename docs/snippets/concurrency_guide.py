"""Concurrency keys: at most one sync per customer runs at once, across every worker.

# expect: most syncs of one customer at once: 1
# expect: acme waited: waiting for a concurrency slot of key 'acme' (1 running)
# expect: superseded: cancelled by newer task
"""

from __future__ import annotations

import asyncio
from typing import Any

import ebind
import ebind.logging
from ebind.embed import start_node

app = ebind.App("concurrency-guide")
running: dict[str, int] = {}
most: dict[str, int] = {}


# --8<-- [start:tasks]
@app.task(concurrency=1, concurrency_key="customer_id")
async def sync_account(customer_id: str, full: bool = False) -> str:
    running[customer_id] = running.get(customer_id, 0) + 1
    most[customer_id] = max(most.get(customer_id, 0), running[customer_id])
    await asyncio.sleep(0.3)
    running[customer_id] -= 1
    return customer_id


@app.task(
    concurrency=ebind.Concurrency(
        limit=1,
        key=lambda doc_id, **_: doc_id,  # any function of the arguments, by name
        strategy="cancel_in_progress",  # a newer render of a doc stops the older one
    )
)
async def render(doc_id: str, version: int) -> int:
    await asyncio.sleep(0.5 if version == 1 else 0)
    return version


# --8<-- [end:tasks]


async def waiting_note(fut: ebind.Future[Any]) -> str:
    """Poll the task's progress until its wait shows up."""
    while True:
        got = await fut.progress()
        if got is not None and got.note.startswith("waiting"):
            return got.note
        await asyncio.sleep(0.05)


async def show() -> None:
    """Enqueue syncs of two customers, read a wait, and supersede a render."""
    # --8<-- [start:calls]
    futs = [await sync_account.delay("acme") for _ in range(3)]
    futs.append(await sync_account.delay("globex"))
    # a call may name its key itself
    futs.append(await sync_account.apply_async(("initech",), concurrency_key="backfill"))
    # --8<-- [end:calls]
    note = await asyncio.wait_for(waiting_note(futs[2]), 10)
    await asyncio.gather(*(f.result(20) for f in futs))
    print("most syncs of one customer at once:", max(most.values()))
    print("acme waited:", note)
    old = await render.delay("d1", 1)
    await asyncio.sleep(0.2)
    new = await render.delay("d1", 2)
    try:
        await old.result(10)
    except ebind.TaskFailed as exc:
        newer = "cancelled by newer task" in exc.error.message
        print(f"{exc.error.kind}: {'cancelled by newer task' if newer else exc.error.message}")
    await new.result(10)


async def main() -> None:
    ebind.logging.configure(level="critical")
    with start_node() as node:
        app.servers = [node.client_url]
        async with app:
            worker = app.worker(scheduler=False)
            async with asyncio.TaskGroup() as group:
                group.create_task(worker.run())
                await show()
                await worker.stop()


if __name__ == "__main__":
    asyncio.run(main())
