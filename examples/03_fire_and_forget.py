"""Fire-and-forget with send(), delayed tasks with countdown, and dedupe by task_id.

# expect: sent 3 tasks without waiting for results
# expect: processed: a, b, c
# expect: duplicate task_id ran once: 1
# expect: delayed task ran after >= 1s: True
"""

from __future__ import annotations

import asyncio
import time

import ebind
import ebind.logging
from ebind.embed import start_node

app = ebind.App("fire")
seen: list[str] = []
ran_at: dict[str, float] = {}


@app.task
def record(item: str) -> None:
    seen.append(item)
    ran_at[item] = time.monotonic()


async def wait_for(count: int) -> None:
    for _ in range(200):
        if len(seen) >= count:
            return
        await asyncio.sleep(0.05)


async def main() -> None:
    ebind.logging.configure(level="warning")
    with start_node() as node:
        app.servers = [node.client_url]
        async with app:
            worker = app.worker(scheduler=False)
            running = asyncio.create_task(worker.run())
            try:
                ids = [await record.send(item) for item in ("a", "b", "c")]
                print(f"sent {len(ids)} tasks without waiting for results")
                await wait_for(3)
                print("processed:", ", ".join(sorted(seen)))
                for _ in range(3):  # a retried publish with the same id is dropped
                    await record.apply_async(("dup",), task_id="order-42", ignore_result=True)
                await wait_for(4)
                await asyncio.sleep(0.5)
                print("duplicate task_id ran once:", seen.count("dup"))
                start = time.monotonic()
                await record.apply_async(("later",), countdown=1.0, ignore_result=True)
                await wait_for(5)
                print("delayed task ran after >= 1s:", ran_at["later"] - start >= 1.0)
            finally:
                await worker.stop()
                await running


if __name__ == "__main__":
    asyncio.run(main())
