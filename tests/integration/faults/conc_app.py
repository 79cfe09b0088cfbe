"""App served by worker processes in the concurrency-key tests; each run logs its start and end."""

from __future__ import annotations

import asyncio
import json
import os
import time

from ebind.app import App
from ebind.context import Context
from ebind.limits.concurrency_rules import Concurrency

LEASE_TTL = 2.0
"""Short, so a SIGKILLed worker's slot lapses quickly."""

app = App("conctest")


def _ledger(**fields: object) -> None:
    line = json.dumps({**fields, "pid": os.getpid(), "t": time.time()})
    fd = os.open(os.environ["EBIND_TEST_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _started_before(task_id: str) -> bool:
    try:
        with open(os.environ["EBIND_TEST_LEDGER"], encoding="utf-8") as f:
            return any(json.loads(line).get("task_id") == task_id for line in f if line.strip())
    except FileNotFoundError:
        return False


async def _run(ctx: Context, key: str, ms: int) -> str:
    again = _started_before(ctx.task_id)
    _ledger(event="start", task_id=ctx.task_id, name=ctx.name, key=key)
    # a second run (its first worker was killed) finishes at once, so the test stays short;
    # the ledger tells, not ctx.attempt: a copy re-published to wait for a slot counts from 1
    await asyncio.sleep(0 if again else ms / 1000)
    _ledger(event="end", task_id=ctx.task_id, name=ctx.name, key=key)
    return key


@app.task(name="cc.one", concurrency=Concurrency(limit=1, key="key", lease_ttl=LEASE_TTL, hold=1.0))
async def one(ctx: Context, key: str, ms: int) -> str:
    """Sleep ``ms``; at most one per key runs at once."""
    return await _run(ctx, key, ms)


@app.task(name="cc.two", concurrency=Concurrency(limit=2, key="key", lease_ttl=LEASE_TTL, hold=1.0))
async def two(ctx: Context, key: str, ms: int) -> str:
    """Sleep ``ms``; at most two per key run at once."""
    return await _run(ctx, key, ms)
