"""Each pull request has its own reply subject, so a timeout retires the request it answers.

The server does not serve one inbox's requests in order: a request it served in part goes
to the back of its queue, so two open requests of batch 2 get one message each. Both
deliveries are charged to the first request (a delivery cannot say which request it
served); matched by order, the first request's timeout then retired the second one, still
open on the server, and the puller believed fewer requests open than there were.
"""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from ebind.direct import subscribe_direct
from ebind.worker.pull import Budget, Puller

pytestmark = pytest.mark.timeout(60)


async def test_two_open_requests_are_accounted_apart(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="PULLTOK", subjects=["pulltok.>"])
        config = ConsumerConfig(durable_name="d", ack_policy=AckPolicy.EXPLICIT)
        await js.add_consumer("PULLTOK", config)
        budget = Budget(10)
        got: list[Any] = []
        p = Puller(
            nc, stream="PULLTOK", durable="d", budget=budget,
            on_msg=lambda m, _p: got.append(m), expires=1.0, rank=0, idle_expires=5.0,
        )  # fmt: skip
        # No pull loop: the two requests are made by hand, as start() would subscribe.
        p._inbox = nc.new_inbox()
        p._sub = await subscribe_direct(nc, p._inbox + ".*", p._deliver)
        await p._request(2)  # R1: batch 2, expires in 1 s
        await asyncio.sleep(0.3)
        await p._request(2)  # R2: batch 2, 0.3 s later
        await nc.flush()
        await asyncio.sleep(0.05)
        for i in range(2):  # the server hands one to R1 and one to R2
            await js.publish("pulltok.x", b"m%d" % i)
        await asyncio.sleep(0.1)
        assert len(got) == 2
        await asyncio.sleep(0.75)  # R1 timed out on the server (its 408 came), R2 did not
        info = await js.consumer_info("PULLTOK", "d")
        assert info.num_waiting == len(p._requests) == 1  # R2 is still known to be open
        assert budget.requested == p.outstanding
        await js.publish("pulltok.x", b"m2")  # R2 takes it
        await asyncio.sleep(0.1)
        assert len(got) == 3
        assert budget.requested == p.outstanding
        await js.delete_stream("PULLTOK")
    finally:
        await nc.close()
