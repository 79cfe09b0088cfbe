"""Queues and priority bands: two services on one server, -Q routing, high before low.

Two Apps stand for two services sharing one NATS server. Each worker pulls only the
tasks it has handlers for, so neither ever sees (or dead-letters) the other's tasks. A
task that no running worker serves waits in its queue, visible with its depth and age,
until a worker for it starts. With one slot and a backlog, the high band runs first.

# expect: billing ran on billing-worker: 3
# expect: emails ran on emails-worker: 3
# expect: dead letters: 0
# expect: waiting in queue reports: depth 1 (no consumer yet)
# expect: report ran once a reports worker started: weekly
# expect: with one slot: high, high, normal, low, low
"""

from __future__ import annotations

import asyncio

import ebind
import ebind.logging
from ebind.context import Context
from ebind.embed import start_node
from ebind.inspection import queue_rows

billing = ebind.App("billing")
emails = ebind.App("emails")
front = ebind.App("front")  # a producer without either service's code
ran: dict[str, list[str]] = {"billing": [], "emails": []}
order: list[str] = []


@billing.task(name="billing.charge", queue="billing")
async def charge(ctx: Context, cents: int) -> int:
    ran["billing"].append(ctx.worker_id)
    return cents


@emails.task(name="emails.send", queue="emails")
async def send(ctx: Context, to: str) -> str:
    ran["emails"].append(ctx.worker_id)
    return to


@billing.task(name="billing.job")
async def job(label: str) -> None:
    order.append(label)


async def main() -> None:
    ebind.logging.configure(level="warning")
    with start_node() as node:
        for app in (billing, emails, front):
            app.servers = [node.client_url]
        async with billing, emails, front:
            # Each service serves its own queue (`ebind worker -A ... -Q billing`).
            workers = [
                billing.worker(worker_id="billing-worker", queues=["billing"], scheduler=False),
                emails.worker(worker_id="emails-worker", queues=["emails"], scheduler=False),
            ]
            running = [asyncio.create_task(w.run()) for w in workers]
            for w in workers:
                await w.wait_ready()
            futs = []
            for i in range(3):  # sent by name: the producer needs neither service's code
                futs.append(await front.apply_async("billing.charge", (i,), queue="billing"))
                futs.append(await front.apply_async("emails.send", (f"u{i}",), queue="emails"))
            for f in futs:
                await f.result(10)
            print("billing ran on billing-worker:", ran["billing"].count("billing-worker"))
            print("emails ran on emails-worker:", ran["emails"].count("emails-worker"))
            print("dead letters:", await front.dlq.count())

            # Nobody serves the reports queue yet: the task waits, visible.
            report = await front.apply_async("reports.weekly", queue="reports")
            await asyncio.sleep(0.3)
            (row,) = [r for r in await queue_rows(front.js) if r.queue == "reports"]
            print(f"waiting in queue {row.queue}: depth {row.depth} (no consumer yet)")
            reports = ebind.App("reports", nats_url=node.client_url)

            @reports.task(name="reports.weekly", queue="reports")
            async def weekly() -> str:
                return "weekly"

            async with reports:
                reporter = reports.worker(scheduler=False)
                reporting = asyncio.create_task(reporter.run())
                print("report ran once a reports worker started:", await report.result(10))
                await reporter.stop()
                await reporting

            # Priority: queue a backlog first, then let one slot work through it.
            backlog = [
                await job.apply_async((band,), priority=band)
                for band in ("low", "normal", "high", "low", "high")
            ]
            solo = billing.worker(concurrency=1, scheduler=False)
            running.append(asyncio.create_task(solo.run()))
            workers.append(solo)
            for f in backlog:
                await f.result(10)
            print("with one slot:", ", ".join(order))
            for w in workers:
                await w.stop()
            await asyncio.gather(*running)


if __name__ == "__main__":
    asyncio.run(main())
