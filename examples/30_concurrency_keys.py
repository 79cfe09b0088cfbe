"""Concurrency keys: a cluster-wide limit per key, the slots held, and round-robin between keys.

# expect: peak exports per tenant: {'t1': 2, 't2': 2}
# expect: held now: t1 slot 0, t1 slot 1
# expect: round-robin: a 'b' task finished before the second 'a': True
"""

from __future__ import annotations

import asyncio
from typing import Any

import ebind
import ebind.logging
from ebind.embed import start_node
from ebind.limits.concurrency import list_slots

app = ebind.App("concurrency-keys")
now_running: dict[str, int] = {}
peak: dict[str, int] = {}
finished: list[str] = []


@app.task(name="export", concurrency=2, concurrency_key="tenant")
async def export(tenant: str, n: int) -> int:
    """At most two exports of one tenant run at once, on however many workers."""
    now_running[tenant] = now_running.get(tenant, 0) + 1
    peak[tenant] = max(peak.get(tenant, 0), now_running[tenant])
    await asyncio.sleep(0.3)
    now_running[tenant] -= 1
    return n


@app.task(name="crawl", concurrency=ebind.Concurrency(limit=1, key="site", strategy="round_robin"))
async def crawl(site: str, page: int) -> None:
    """One crawl per site at a time; a site with a backlog does not hold the others back."""
    await asyncio.sleep(0.3)
    finished.append(site)


async def slots_of(app: ebind.App, key: str) -> list[Any]:
    """The slots of ``key`` held now (what `ebind concurrency ls` shows), once both are taken."""
    for _ in range(100):
        held = [r for r in await list_slots(app.js) if r.key == key]
        if len(held) == 2:
            return held
        await asyncio.sleep(0.02)
    return []


async def main() -> None:
    ebind.logging.configure(level="error")
    with start_node() as node:
        app.servers = [node.client_url]
        async with app:
            futs = [await export.delay(tenant, n) for n in range(4) for tenant in ("t1", "t2")]
            # two workers (as if on two machines) share the limit through NATS
            workers = [app.worker(scheduler=False, concurrency=4) for _ in range(2)]
            async with asyncio.TaskGroup() as group:
                for w in workers:
                    group.create_task(w.run())
                held = await slots_of(app, "t1")
                await asyncio.gather(*(f.result(20) for f in futs))
                print("peak exports per tenant:", dict(sorted(peak.items())))
                print("held now:", ", ".join(f"{r.key} slot {r.slot}" for r in held))
                crawls = [await crawl.delay("a", p) for p in range(4)]
                crawls += [await crawl.delay("b", p) for p in range(2)]
                await asyncio.gather(*(f.result(30) for f in crawls))
                first_b, second_a = (
                    finished.index("b"),
                    finished.index("a", finished.index("a") + 1),
                )
                print("round-robin: a 'b' task finished before the second 'a':", first_b < second_a)
                for w in workers:
                    await w.stop()


if __name__ == "__main__":
    asyncio.run(main())
