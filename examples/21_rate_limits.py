"""Rate limits that hold across the cluster: all workers together, per task or per key.

``@app.task(rate_limit="20/s")`` caps how often the task starts on every worker together
(the state lives in a NATS KV bucket, not in one worker's memory). ``rate_key=`` names an
argument whose value gets a limit of its own, e.g. one per customer; a call can also name
its key with ``apply_async(rate_key=...)``. A task over its limit waits for its turn: it is
never failed, retried or dead-lettered for it. Two workers run here, as two processes would.
Starts its own embedded nats-server, so it needs nothing running.

# expect: 40 tasks on 2 workers, limit 20/s: within 10% of the limit: True
# expect: both workers took part: True
# expect: per customer, never above 5/s: acme True, globex True
# expect: two customers together ran faster than one limit allows: True
# expect: a call naming its own key: ok
# expect: dead letters: 0
"""

from __future__ import annotations

import asyncio
import time

import ebind
import ebind.logging
from ebind.embed import start_node

app = ebind.App("ratelimits")


@app.task(name="mail.send", rate_limit="20/s")
async def send_mail(ctx: ebind.Context, to: str) -> tuple[float, str]:
    return time.time(), ctx.worker_id


@app.task(name="api.call", rate_limit="5/s", rate_key="customer")
async def call_api(customer: str, n: int) -> float:
    return time.time()


def rate(starts: list[float]) -> float:
    """Starts per second from the first to the last."""
    starts = sorted(starts)
    return (len(starts) - 1) / (starts[-1] - starts[0])


def within(measured: float, limit: float) -> bool:
    return abs(measured - limit) <= limit * 0.1


async def main() -> None:
    ebind.logging.configure(level="warning")
    with start_node() as node:
        app.servers = [node.client_url]
        async with app:
            workers = [app.worker(concurrency=8, scheduler=False) for _ in range(2)]
            running = [asyncio.create_task(w.run()) for w in workers]
            try:
                futs = [await send_mail.delay(f"user{i}@example.com") for i in range(40)]
                results = [await f.result(timeout=30) for f in futs]
                measured = rate([at for at, _ in results])
                print(
                    "40 tasks on 2 workers, limit 20/s: within 10% of the limit:",
                    within(measured, 20),
                )
                print("both workers took part:", len({w for _, w in results}) == 2)

                calls = {
                    c: [await call_api.delay(c, n) for n in range(10)] for c in ("acme", "globex")
                }
                starts = {c: [await f.result(timeout=30) for f in fs] for c, fs in calls.items()}
                print(
                    "per customer, never above 5/s:",
                    f"acme {rate(starts['acme']) <= 5 * 1.1},",
                    f"globex {rate(starts['globex']) <= 5 * 1.1}",
                )
                print(
                    "two customers together ran faster than one limit allows:",
                    rate(starts["acme"] + starts["globex"]) > 5 * 1.5,
                )
                own = await call_api.apply_async(("acme", 99), rate_key="acme-batch")
                await own.result(timeout=30)
                print("a call naming its own key: ok")
                print("dead letters:", await app.dlq.count())
            finally:
                for w in workers:
                    await w.stop()
                await asyncio.gather(*running)


if __name__ == "__main__":
    asyncio.run(main())
