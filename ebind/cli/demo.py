"""``ebind demo``: the whole stack on one machine, started and stopped by ebind itself.

Starts an embedded nats-server (sync_interval always) on a free loopback port, connects an
App, runs a worker with the workflow scheduler in-process, enqueues a few tasks (one with a
retry, one failing to the DLQ), runs a fan-out/fan-in DAG, prints everything, then shuts
it all down by PID.
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import click
import msgspec

from ebind.app import App
from ebind.context import Context
from ebind.errors import NonRetryable, TaskFailed
from ebind.retry import RetryPolicy

__all__ = ["demo"]

app = App("demo")


class Order(msgspec.Struct):
    """A demo order."""

    id: str
    items: list[str]
    total: float


@app.task(name="demo.add")
async def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@app.task(name="demo.load_order")
def load_order(order_id: str) -> Order:
    """Load an order (a sync handler: runs in the worker's thread pool)."""
    return Order(id=order_id, items=["book", "pen"], total=23.5)


_flaky_calls: dict[str, int] = {}


@app.task(name="demo.flaky", retry=RetryPolicy(initial_interval=0.2, maximum_attempts=3))
async def flaky(ctx: Context, key: str) -> str:
    """Fail on the first attempt, succeed on the second."""
    _flaky_calls[key] = _flaky_calls.get(key, 0) + 1
    if ctx.attempt < 2:
        raise RuntimeError("transient glitch")
    return f"{key} ok on attempt {ctx.attempt}"


@app.task(name="demo.charge")
async def charge(amount: float) -> str:
    """Refuse negative amounts without retrying."""
    if amount < 0:
        raise NonRetryable(f"cannot charge {amount}", kind="validation")
    return f"charged {amount}"


@app.task(name="demo.price")
async def price(item: str) -> float:
    """Price one item."""
    return {"book": 20.0, "pen": 3.5}.get(item, 1.0)


@app.task(name="demo.total")
def total(prices: list[float]) -> float:
    """Sum a list of prices (its argument is a list of refs)."""
    return round(sum(prices), 2)


async def _tasks(out: Any) -> None:
    out(click.style("\n== tasks ==", bold=True))
    fut = await add.delay(2, 3)
    out(f"add(2, 3)            -> {await fut.result(timeout=10)}")
    order = await (await load_order.delay("o-42")).result(timeout=10)
    out(f"load_order('o-42')   -> {order!r}")
    out(f"flaky('k')           -> {await (await flaky.delay('k')).result(timeout=10)}")
    try:
        await (await charge.delay(-5.0)).result(timeout=10)
    except TaskFailed as exc:
        out(f"charge(-5.0)         -> TaskFailed {exc.error.kind}: {exc.error.message}")
    entries = await app.dlq.list(limit=10)
    out(f"dead letters         -> {len(entries)} (seq {[e.seq for e in entries]})")


async def _workflow(out: Any) -> None:
    from ebind.workflow import DAG

    out(click.style("\n== workflow ==", bold=True))
    wf = app.workflow
    dag = DAG(labels=["demo"])
    order = dag.step("load", load_order, "o-42")
    prices = [dag.step(f"price-{item}", price, item, after=[order]) for item in ("book", "pen")]
    summed = dag.step("total", total, [p.ref() for p in prices])
    await dag.submit(wf)
    out(f"DAG {dag.id}: total = {await wf.result(dag.id, summed, timeout=30)}")
    meta = await wf.wait(dag.id, timeout=30)
    out(f"DAG status: {meta.status.value}")
    buf = io.StringIO()
    await wf.debug_print(dag.id, file=buf)
    out(buf.getvalue().rstrip())


async def _run(sync_interval: str | None, out: Any) -> None:
    from ebind.embed import start_node

    started = time.monotonic()
    node = await asyncio.to_thread(start_node, sync_interval=sync_interval)
    try:
        out(f"embedded nats-server {node.client_url} (pid {node.pid}, store {node.store_dir})")
        app.servers = [node.client_url]
        async with app:
            worker = app.worker(concurrency=8, ack_wait=5.0, shutdown_grace=5.0)
            running = asyncio.create_task(worker.run())
            try:
                out(f"worker {worker.worker_id} running (scheduler on)")
                await _tasks(out)
                await _workflow(out)
            finally:
                await worker.stop()
                await running
    finally:
        await asyncio.to_thread(node.shutdown)
    out(f"\nall stopped in {time.monotonic() - started:.1f}s")


@click.command("demo")
@click.option(
    "--sync-interval",
    type=click.Choice(["always", "default"]),
    default="always",
    show_default=True,
    help="JetStream fsync policy of the embedded node.",
)
def demo(sync_interval: str) -> None:
    """Run a demo on an embedded NATS server: tasks, retries, the DLQ and a DAG."""
    from ebind.logging import configure

    configure(format="console", level="warning")
    asyncio.run(_run(None if sync_interval == "default" else sync_interval, click.echo))
