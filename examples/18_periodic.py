"""Periodic tasks without a beat process: the NATS server fires the schedule.

``app.schedule(...)`` stores a JetStream message schedule; on every tick the server puts
one task message into the work queue, so each tick runs exactly once however many workers
run, and the schedule survives restarts of every process (it lives in the stream).
Starts its own embedded nats-server, so it needs nothing running.

# expect: scheduled heartbeat: every 0:00:01 -> heartbeat.beat
# expect: listed: ['heartbeat', 'nightly']
# expect: nightly: cron 30 2 * * * (Europe/Berlin)
# expect: ran 3 times, each firing with its own task id: True
# expect: removed: True
# expect: left: ['nightly']
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import ebind
import ebind.logging
from ebind.embed import start_node

app = ebind.App("periodic")
runs: list[str] = []
three_runs = asyncio.Event()


@app.task(name="heartbeat.beat")
async def beat(ctx: ebind.Context, service: str) -> None:
    runs.append(ctx.task_id)  # "<schedule name>-<stream sequence>": one id per firing
    if len(runs) >= 3:
        three_runs.set()


@app.task(name="reports.nightly")
def nightly(region: str) -> None: ...


async def main() -> None:
    ebind.logging.configure(level="warning")
    with start_node() as node:
        app.servers = [node.client_url]
        async with app:
            info = await app.schedule("heartbeat", beat, ["api"], every=timedelta(seconds=1))
            print(f"scheduled {info.name}: every {info.every} -> {info.task}")
            # 5-field cron is accepted and listed as written (the server gets seconds = 0).
            await app.schedule("nightly", nightly, ["eu"], cron="30 2 * * *", tz="Europe/Berlin")
            listed = await app.schedules()
            print("listed:", [s.name for s in listed])
            print(f"nightly: cron {listed[1].cron} ({listed[1].tz})")

            worker = app.worker(concurrency=4, scheduler=False, shutdown_grace=5)
            running = asyncio.create_task(worker.run())
            try:
                await asyncio.wait_for(three_runs.wait(), timeout=10)
                print("removed:", await app.unschedule("heartbeat"))
            finally:
                await worker.stop()
                await running
            # A firing may land between the third run and the removal: report the first 3.
            first = runs[:3]
            print(
                f"ran {len(first)} times, each firing with its own task id:", len(set(first)) == 3
            )
            print("left:", [s.name for s in await app.schedules()])
            await app.unschedule("nightly")


if __name__ == "__main__":
    asyncio.run(main())
