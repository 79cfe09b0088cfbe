"""Periodic tasks: the NATS server fires each tick, so there is no beat process.

# expect: ticks: 2
# expect: schedules: ['cleanup', 'nightly-report']
# expect: removed: True
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import ebind
import ebind.logging
from ebind.embed import start_node

app = ebind.App("periodic-guide")
ticks: list[str] = []
two_ticks = asyncio.Event()


# --8<-- [start:tasks]
@app.task(name="reports.nightly")
def nightly_report(region: str) -> None:
    print("report for", region)


@app.task(name="cleanup")
async def cleanup(ctx: ebind.Context) -> None:
    ticks.append(ctx.task_id)  # one task id per firing
    if len(ticks) >= 2:
        two_ticks.set()


# --8<-- [end:tasks]


async def main() -> None:
    ebind.logging.configure(level="warning")
    with start_node() as node:
        app.servers = [node.client_url]
        async with app:
            worker = app.worker(concurrency=2, scheduler=False)
            running = asyncio.create_task(worker.run())
            try:
                # --8<-- [start:schedule]
                await app.schedule("cleanup", cleanup, every=timedelta(seconds=1))
                await app.schedule(
                    "nightly-report", nightly_report, ["eu"], cron="0 3 * * *", tz="Europe/Berlin"
                )
                await asyncio.wait_for(two_ticks.wait(), timeout=20)
                print("ticks:", len(ticks[:2]))
                print("schedules:", [s.name for s in await app.schedules()])
                print("removed:", await app.unschedule("cleanup"))
                # --8<-- [end:schedule]
            finally:
                await worker.stop()
                await running


if __name__ == "__main__":
    asyncio.run(main())
