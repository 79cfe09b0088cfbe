"""App served by `ebind worker` subprocesses in the CLI tests; handlers write an effect ledger."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from ebind.app import App
from ebind.context import Context

app = App("clitest")


def _ledger(phase: str, ctx: Context) -> None:
    line = json.dumps(
        {
            "task_id": ctx.task_id,
            "attempt": ctx.attempt,
            "worker_id": ctx.worker_id,
            "pid": os.getpid(),
            "phase": phase,
        }
    )
    fd = os.open(os.environ["EBIND_TEST_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


@app.task(name="cli.barrier")
def barrier(ctx: Context, path: str) -> str:
    """Record the start, wait until ``path`` exists, record the end."""
    _ledger("start", ctx)
    while not Path(path).exists():
        time.sleep(0.02)
    _ledger("end", ctx)
    return ctx.worker_id


@app.task(name="cli.echo")
async def echo(x: int) -> int:
    """Return ``x``."""
    return x


@app.task(name="cli.hang")
async def hang(ctx: Context) -> None:
    """Record the start, then wait forever on the event loop (until cancelled)."""
    _ledger("start", ctx)
    await asyncio.Event().wait()
