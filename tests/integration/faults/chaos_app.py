"""App served by the nemesis test's worker processes: fast sweeps, a short scheduler lease.

Every handler run appends one line to the ledger file, so the test can count executions.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ebind.app import App
from ebind.context import Context
from ebind.errors import NonRetryable

LEASE_TTL = 2.0
"""Seconds the scheduler lease outlives a holder that stopped renewing."""


class ChaosApp(App):
    """An App whose workflow reacts within seconds, so faults heal inside a short run."""

    async def connect(self) -> None:
        """Connect, then configure the workflow with test-sized intervals and lease."""
        already = self._nc is not None
        await super().connect()
        if already:
            return
        from ebind.workflow.leader import KVLeaseElector

        self.configure_workflow(
            sweep_check_interval=0.2,
            sweep_interval=0.5,
            dispatch_grace=0.5,
            redispatch_after=3.0,
            liveness_interval=0.2,
            liveness_ttl=1.5,
            nak_delay=0.1,
            elector=KVLeaseElector(self.js, ttl=LEASE_TTL),
        )


app = ChaosApp("chaos")


def _ledger(ctx: Context, **extra: Any) -> None:
    record = {"task_id": ctx.task_id, "attempt": ctx.attempt, "pid": os.getpid(), **extra}
    fd = os.open(os.environ["EBIND_TEST_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


@app.task(name="ch.work")
async def work(ctx: Context, x: int) -> int:
    """Return ``x * 3``."""
    _ledger(ctx)
    return x * 3


@app.task(name="ch.fail")
async def fail(ctx: Context, x: int) -> int:
    """Always fail, without retries, so the task ends as a dead letter."""
    _ledger(ctx)
    raise NonRetryable(f"chaos refuses {x}")


@app.task(name="ch.total")
async def total(ctx: Context, xs: list[int], bonus: int, approval: Any) -> int:
    """Sum ``xs`` plus ``bonus`` once ``approval`` (a signal's payload) is in."""
    _ledger(ctx)
    return sum(xs) + bonus + int(approval["add"])
