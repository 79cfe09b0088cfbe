"""The raw nats-py floor: no framework, a work-queue stream, a pull consumer, a core reply.

Worker: ``python floor_tasks.py worker --url URL``. Client: ``python floor_tasks.py
pipelined|puback --url URL ...``: ``pipelined`` keeps up to 4,000 publishes in flight
(``publish_async``), ``puback`` awaits each PubAck before the next publish.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import nats
from common import measure, parse
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

STREAM, DURABLE, SUBJECT, REPLY = "FLOOR", "floor", "floor.task", "floor.reply"
WINDOW = 4000
FETCH = 256


async def worker(url: str) -> None:
    """Fetch up to 256 at a time, ack each and reply on core NATS."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await _provision(js)
    sub = await js.pull_subscribe_bind(DURABLE, stream=STREAM)
    while True:
        try:
            msgs = await sub.fetch(FETCH, timeout=0.5)
        except nats.errors.TimeoutError:
            continue
        for msg in msgs:
            await msg.ack()
            await nc.publish(REPLY, msg.data)


async def _provision(js: Any) -> None:
    # Both sides create the same stream and consumer, so either may start first.
    await js.add_stream(
        StreamConfig(name=STREAM, subjects=[SUBJECT], retention=RetentionPolicy.WORK_QUEUE)
    )
    await js.add_consumer(
        STREAM, ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.EXPLICIT, ack_wait=30)
    )


class Client:
    """A producer that counts replies."""

    def __init__(self, pipelined: bool) -> None:
        self.pipelined = pipelined
        self.want = 0
        self.got = 0
        self.done: asyncio.Future[None] | None = None

    async def connect(self, url: str) -> None:
        self.nc = await nats.connect(url)
        self.js = self.nc.jetstream(publish_async_max_pending=WINDOW)
        await _provision(self.js)
        await self.nc.subscribe(REPLY, cb=self._reply)

    async def _reply(self, _msg: Any) -> None:
        self.got += 1
        if self.got >= self.want and self.done is not None and not self.done.done():
            self.done.set_result(None)

    async def batch(self, n: int) -> None:
        self.got, self.want = 0, n
        self.done = asyncio.get_running_loop().create_future()
        for i in range(n):
            if self.pipelined:
                await self.js.publish_async(SUBJECT, b"%d" % i)
            else:
                await self.js.publish(SUBJECT, b"%d" % i)
        if self.pipelined:
            await self.js.publish_async_completed()
        await asyncio.wait_for(self.done, 120)


def main() -> None:
    mode, args = sys.argv[1], parse(sys.argv[2:])
    if mode == "worker":
        asyncio.run(worker(args.url))
        return
    client = Client(pipelined=mode == "pipelined")
    with asyncio.Runner() as runner:
        runner.run(client.connect(args.url))
        measure(args, lambda n: runner.run(client.batch(n)), lambda: runner.run(client.batch(1)))
        runner.run(client.nc.close())


if __name__ == "__main__":
    main()
