"""Cluster HA: a 3-node JetStream cluster, R3 streams, two workers, and a node killed mid-run.

Every ebind stream and bucket is created with ``replicas=3``; the clients know all three
URLs, so when a node dies they reconnect to the others and work continues.

# expect: cluster up: 3 nodes
# expect: stream replicas: 3
# expect: before the failure: 10/10 tasks done
# expect: killed one node
# expect: after the failure: 10/10 tasks done
# expect: both workers served tasks: True
"""

from __future__ import annotations

import asyncio

import structlog.testing

import ebind
from ebind.embed import start_cluster
from ebind.streams import TASKS_STREAM

app = ebind.App("ha", replicas=3)


@app.task(name="ha.square")
async def square(ctx: ebind.Context, n: int) -> tuple[int, str]:
    await asyncio.sleep(0.01)
    return n * n, ctx.worker_id


async def submit(n: int) -> ebind.Future[tuple[int, str]]:
    # While a stream elects a new leader, publishes fail fast with PublishFailed. Retrying
    # with the same task_id is safe: a copy that was stored after all is dropped as a duplicate.
    task_id = f"square-{n}"
    for attempt in range(20):
        try:
            return await square.apply_async(args=(n,), task_id=task_id)
        except ebind.PublishFailed:
            if attempt == 19:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def batch(start: int) -> list[tuple[int, str]]:
    futs = [await submit(n) for n in range(start, start + 10)]
    return [tuple(await f.result(timeout=60)) for f in futs]  # type: ignore[misc]


async def connect(a: ebind.App) -> None:
    # A cluster that just elected its meta leader can still be slow to answer the first
    # JetStream API calls; retry the connect a few times instead of failing the demo.
    for attempt in range(5):
        try:
            await a.connect()
            return
        except Exception:
            if attempt == 4:
                raise
            await asyncio.sleep(1.0)


async def main() -> None:
    with structlog.testing.capture_logs(), start_cluster(3) as cluster:
        print(f"cluster up: {len(cluster.nodes)} nodes")
        app.servers = list(cluster.client_urls)
        # A second App = a second worker process's connection, here in the same program.
        other = ebind.App("ha", nats_url=list(reversed(cluster.client_urls)), replicas=3)
        other.registry.register(square.spec)
        try:
            await connect(app)
            await connect(other)
            info = await app.js.stream_info(TASKS_STREAM)
            print("stream replicas:", info.config.num_replicas)
            w1 = app.worker(worker_id="w1", scheduler=False, ack_wait=5.0)
            w2 = other.worker(worker_id="w2", scheduler=False, ack_wait=5.0)
            runs = [asyncio.create_task(w.run()) for w in (w1, w2)]
            try:
                await asyncio.gather(w1.wait_ready(), w2.wait_ready())
                first = await batch(0)
                ok = sum(r == n * n for (r, _), n in zip(first, range(10), strict=True))
                print(f"before the failure: {ok}/10 tasks done")
                cluster.kill_node(1)
                print("killed one node")
                second = await batch(10)
                ok = sum(r == n * n for (r, _), n in zip(second, range(10, 20), strict=True))
                print(f"after the failure: {ok}/10 tasks done")
                served = {w for _, w in first + second}
                print("both workers served tasks:", served == {"w1", "w2"})
            finally:
                for w in (w1, w2):
                    await w.stop()
                await asyncio.gather(*runs, return_exceptions=True)
        finally:
            await other.close()
            await app.close()


if __name__ == "__main__":
    asyncio.run(main())
