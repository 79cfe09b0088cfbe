"""app.schedule() with a body just under max_payload: nats-py checks only the body, the
server counts the schedule headers too and would refuse it and close the connection; the
schedule is refused first with PayloadTooLarge and the connection stays up."""

from __future__ import annotations

import asyncio

import pytest

from ebind import App
from ebind.errors import PayloadTooLarge

pytestmark = pytest.mark.timeout(60)


async def test_schedule_near_max_payload_is_refused_cleanly(app: App) -> None:
    @app.task(name="sched.big")
    async def big(x: str) -> None:
        return None

    size = app.max_payload - 80  # body fits; body + schedule headers do not
    with pytest.raises(PayloadTooLarge):
        await app.schedule("big-one", "sched.big", ["x" * size], every=3600)
    await asyncio.sleep(0.5)
    assert app.nc.is_connected and not app.nc.is_closed, "connection lost"
