"""Progress from running tasks: an async and a sync handler report it, the producer reads it.

# expect: async progress: 50% copied 10 of 10
# expect: sync progress: 80% hashing
# expect: results: 10 ok
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import ebind
import ebind.logging
from ebind.embed import start_node

app = ebind.App("progress-guide")
release = asyncio.Event()
sync_release = threading.Event()


# --8<-- [start:handlers]
@app.task(name="copy")
async def copy(ctx: ebind.Context, n: int) -> int:
    for i in range(1, n + 1):
        await ctx.progress(i / n / 2, note=f"copied {i} of {n}")  # rate-limited by the worker
    await release.wait()
    return n


@app.task(name="digest")
def digest(ctx: ebind.Context) -> str:
    ctx.progress_sync(0.8, note="hashing")  # sync handlers: never blocks the thread
    sync_release.wait(10)
    return "ok"


# --8<-- [end:handlers]


async def latest(fut: ebind.Future[Any]) -> ebind.Progress:
    """Poll until the task's progress record shows up."""
    while True:
        # --8<-- [start:read]
        got = await fut.progress()  # the latest Progress(fraction, note, at), or None
        # --8<-- [end:read]
        if got is not None and got.fraction in (0.5, 0.8):
            return got
        await asyncio.sleep(0.05)


async def show() -> None:
    """The producer side: enqueue, read the progress, let the tasks finish."""
    a = await copy.delay(10)
    s = await digest.delay()
    pa = await asyncio.wait_for(latest(a), 10)
    print(f"async progress: {pa.fraction:.0%} {pa.note}")
    ps = await asyncio.wait_for(latest(s), 10)
    print(f"sync progress: {ps.fraction:.0%} {ps.note}")
    release.set()
    sync_release.set()
    print(f"results: {await a.result(10)} {await s.result(10)}")


async def main() -> None:
    ebind.logging.configure(level="error")
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
