"""A message on a claim puller's delivery inbox whose reply subject ends in a digit int()
refuses ('²') is handed on like any other; the puller keeps requesting, and later targeted
tasks for that claim still run."""

from __future__ import annotations

import asyncio

import nats
import pytest
from worker_helpers import running

from ebind.app import App

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("forge", [False, True], ids=["control", "forged"])
async def test_claim_puller_after_an_odd_delivery(app: App, nats_url: str, forge: bool) -> None:
    @app.task(name="pi.echo")
    async def echo(x: int) -> int:
        return x

    async with running(app, worker_id="pi-w", claims=["gpu"], concurrency=2) as w:
        puller = w._pullers["gpu"]
        await asyncio.sleep(0.3)  # its overdraft request is open
        if forge:
            nc = await nats.connect(nats_url)
            await nc.publish(puller._inbox + ".x", b"x", reply="x.\u00b2")
            await nc.flush()
            await nc.close()
            await asyncio.sleep(0.3)
        for i in range(3):  # the first may still take the server-side request the forgery hid
            fut = await echo.apply_async(args=(i,), target="gpu")
            assert await fut.result(timeout=8) == i, i
