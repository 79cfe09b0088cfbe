"""Tasks shared by the workflow integration tests and their worker subprocesses."""

from __future__ import annotations

import asyncio
import os
import sys

from ebind import App, Context, NonRetryable, RetryPolicy
from ebind.workflow import current_worker_id, from_context

app = App("wftest", nats_url=os.environ.get("EBIND_NATS_URL"))
LEDGER = os.environ.get("WF_LEDGER", "")


def _note(line: str) -> None:
    if LEDGER:
        with open(LEDGER, "a", encoding="utf-8") as f:
            f.write(line + "\n")


@app.task(name="wf.add")
async def add(a: int, b: int) -> int:
    return a + b


@app.task(name="wf.ranked", queue="wfq", priority="high")
async def ranked(value: int) -> int:
    return value * 2


@app.task(name="wf.total")
def total(xs: list[int]) -> int:
    return sum(xs)


@app.task(name="wf.echo")
async def echo(value: object = None) -> object:
    return value


@app.task(name="wf.fail", retry=RetryPolicy.none())
async def fail(message: str = "boom") -> int:
    raise NonRetryable(message)


@app.task(name="wf.whoami")
async def whoami(ctx: Context, tag: str = "") -> str:
    return current_worker_id() or ctx.worker_id


@app.task(name="wf.fanout")
async def fanout(ctx: Context, n: int) -> int:
    dag = from_context(ctx)
    assert dag is not None
    pages = [await dag.step(f"page-{i}", add, i, 1000, colocate_here=True) for i in range(n)]
    await dag.step("sum", total, [p.ref() for p in pages])
    return n


@app.task(name="wf.slow")
async def slow(tag: str, seconds: float) -> str:
    _note(f"start {tag} {os.getpid()}")
    barrier = os.environ.get("WF_BARRIER", "/nonexistent")
    for _ in range(int(seconds * 20)):
        if os.path.exists(barrier):  # noqa: ASYNC240 - a test barrier, microseconds
            break
        await asyncio.sleep(0.05)
    _note(f"end {tag} {os.getpid()}")
    return tag


async def _serve(worker_id: str, ack_wait: float) -> None:
    await app.connect()
    wf = app.workflow
    wf.liveness_interval = 0.2
    record_ttl = float(os.environ.get("WF_RECORD_TTL") or 0)
    if record_ttl:  # short-lived liveness records, for tests that kill this process
        from ebind.workflow import NatsLiveness

        wf.liveness = NatsLiveness(app.js, ttl=record_ttl / 2, record_ttl=record_ttl)
    w = app.worker(worker_id=worker_id, ack_wait=ack_wait, concurrency=4, shutdown_grace=1)
    await w.run()


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1], float(sys.argv[2])))
