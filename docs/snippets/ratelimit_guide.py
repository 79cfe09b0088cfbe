"""Rate limits: one for a task across all workers, one per key, and a key given on the call.

# expect: 10 reports, none faster than 20/s: True
# expect: both customers served: acme, globex
# expect: nightly batch counted under its own key: done
"""

from __future__ import annotations

import asyncio
import time

import ebind
import ebind.logging
from ebind.embed import start_node
from ebind.worker import Worker

app = ebind.App("ratelimit-guide")


# --8<-- [start:declare]
@app.task(name="reports.render", rate_limit="20/s")  # all workers together
async def render(report_id: str) -> float:
    return time.time()


@app.task(name="crm.sync", rate_limit="5/s", rate_key="customer")  # 5/s for each customer
async def sync_customer(customer: str, page: int) -> str:
    return customer


# --8<-- [end:declare]


async def show() -> None:
    """The producer side."""
    futs = [await render.delay(f"r{i}") for i in range(10)]
    starts = sorted([await f.result(timeout=10) for f in futs])
    fastest = (len(starts) - 1) / (starts[-1] - starts[0])
    print(f"10 reports, none faster than 20/s: {fastest <= 20 * 1.1}")
    served = [
        await (await sync_customer.delay(c, 1)).result(timeout=10) for c in ("acme", "globex")
    ]
    print("both customers served:", ", ".join(served))
    # --8<-- [start:call]
    fut = await sync_customer.apply_async(("acme", 2), rate_key="acme-nightly")
    # --8<-- [end:call]
    await fut.result(timeout=10)
    print("nightly batch counted under its own key: done")


async def main() -> None:
    worker = app.worker(concurrency=8, scheduler=False)
    ebind.logging.configure(level="warning")
    with start_node() as node:
        app.servers = [node.client_url]
        async with app:
            await asyncio.gather(worker.run(), show_then_stop(worker))


async def show_then_stop(worker: Worker) -> None:
    """Run the producer side, then let the worker finish."""
    await asyncio.sleep(0)  # the worker starts first
    await show()
    await worker.stop()


if __name__ == "__main__":
    asyncio.run(main())
