"""While the DLQ cannot take a publish (no leader: every publish waits out its timeout), an
expirer pass ends at the first such failure instead of trying every old message (up to
1,000 per subject), each waiting out the same timeout while it holds the lease."""

from __future__ import annotations

import asyncio
import time

import pytest

import ebind.expirer as expirer_mod
from ebind import App, Retention
from ebind.expirer import Expirer

pytestmark = pytest.mark.timeout(60)


async def test_a_dlq_outage_costs_one_timeout_per_pass_not_one_per_message(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0

    async def stalled(*args, **kwargs):
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)  # stands for the 5 s DLQ_PUBLISH timeout
        raise TimeoutError

    monkeypatch.setattr(expirer_mod, "publish_dead_letter", stalled)
    async with App("expiry", nats_url=nats_url, retention=Retention(tasks=1)) as app:
        for i in range(2 * expirer_mod.RECORD_AT_ONCE):
            await app.enqueue("exp.unserved", i)
        await asyncio.sleep(1.2)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await Expirer(app).sweep()
        took = time.monotonic() - t0
    # The first batch meets the outage (its records run side by side, so it costs one
    # timeout) and ends the pass: the second batch is not tried.
    assert calls <= expirer_mod.RECORD_AT_ONCE, (
        f"one pass tried {calls} publishes against a DLQ that is down ({took:.1f}s)"
    )
