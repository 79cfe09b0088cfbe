"""App served by the stale-worker and stale-leader tests: a 2 s scheduler lease, fast sweeps.

Every handler run appends a ``start`` line when it begins and an ``end`` line when it is done
(with the process id, the attempt and the wall time), so a test can tell which process ran
what, and whether a paused process finished its run after it was resumed.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from chaos_app import ChaosApp

from ebind.context import Context
from ebind.errors import NonRetryable

RUN_SECONDS = 1.0

# The same fast workflow and 2 s lease as the nemesis app.
StaleApp = ChaosApp


app = StaleApp("stale")


def _ledger(ctx: Context, phase: str, **extra: Any) -> None:
    record = {
        "task_id": ctx.task_id,
        "attempt": ctx.attempt,
        "pid": os.getpid(),
        "phase": phase,
        "at": time.time(),
        **extra,
    }
    fd = os.open(os.environ["EBIND_TEST_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


async def _run(ctx: Context) -> None:
    _ledger(ctx, "start")
    await asyncio.sleep(RUN_SECONDS)
    _ledger(ctx, "end")


@app.task(name="st.slow")
async def slow(ctx: Context, x: int) -> int:
    """Return ``2 * x`` after a second."""
    await _run(ctx)
    return 2 * x


@app.task(name="st.first_fails")
async def first_fails(ctx: Context, x: int) -> int:
    """After a second, fail for good on the first delivery; later deliveries return ``2 * x``."""
    await _run(ctx)
    if ctx.attempt == 1:
        raise NonRetryable(f"first delivery of {x} refuses")
    return 2 * x


@app.task(name="st.first_succeeds")
async def first_succeeds(ctx: Context, x: int) -> int:
    """After a second, return ``2 * x`` on the first delivery; later deliveries fail for good."""
    await _run(ctx)
    if ctx.attempt > 1:
        raise NonRetryable(f"delivery {ctx.attempt} of {x} refuses")
    return 2 * x


@app.task(name="st.step")
async def step(ctx: Context, x: int) -> int:
    """Return ``x + 1`` after a second (a DAG step)."""
    await _run(ctx)
    return x + 1
