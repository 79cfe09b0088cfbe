"""App served by worker subprocesses in the crash-point tests; every handler run is logged."""

from __future__ import annotations

import json
import os

from ebind.app import App
from ebind.context import Context
from ebind.retry import RetryPolicy

app = App("crashtest")


def _ledger(ctx: Context) -> None:
    line = json.dumps({"task_id": ctx.task_id, "attempt": ctx.attempt, "pid": os.getpid()})
    fd = os.open(os.environ["EBIND_TEST_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@app.task(name="cp.double")
async def double(ctx: Context, x: int) -> int:
    """Return ``2 * x`` (default retries: a crash before any record costs an attempt)."""
    _ledger(ctx)
    return 2 * x


@app.task(name="cp.once", retry=RetryPolicy.none())
async def once(ctx: Context, x: int) -> int:
    """Return ``2 * x`` with a single attempt: a crash after its answer must not cost it."""
    _ledger(ctx)
    return 2 * x


@app.task(name="cp.fail", retry=RetryPolicy.none())
async def fail(ctx: Context, x: int) -> int:
    """Always fail, so the task is dead-lettered on its first attempt."""
    _ledger(ctx)
    raise ValueError(f"bad input {x}")


@app.task(name="cp.inc")
async def inc(ctx: Context, x: int) -> int:
    """Return ``x + 1`` (a DAG step)."""
    _ledger(ctx)
    return x + 1
