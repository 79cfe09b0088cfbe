"""A simulated worker for scheduler tests: runs captured envelopes through the StepHook."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from ebind.errors import DAGNotFound
from ebind.wire import TaskEnvelope, TaskError
from ebind.worker.hook import StepFailedEarlier
from ebind.workflow import CaptureEnqueuer, ContextDAG, DAGStatus, MemBus, MemStore, Workflow
from ebind.workflow.liveness import MemLiveness


@dataclass
class SimCtx:
    env: TaskEnvelope
    dag: ContextDAG


Handler = Callable[..., Any]


class SimWorker:
    def __init__(
        self,
        wf: Workflow,
        enq: CaptureEnqueuer,
        handlers: dict[str, Handler],
        worker_id: str = "w1",
    ) -> None:
        self.wf = wf
        self.enq = enq
        self.handlers = handlers
        self.worker_id = worker_id
        self.hook = wf.hook()
        self.seen = 0
        self.deliveries: Counter[str] = Counter()
        self.executions: Counter[str] = Counter()
        self.dead_letters: Counter[str] = Counter()

    def take_new(self) -> list[TaskEnvelope]:
        new = self.enq.envelopes[self.seen :]
        self.seen = len(self.enq.envelopes)
        return new

    async def deliver(
        self, env: TaskEnvelope, *, worker_id: str | None = None, run: bool = True
    ) -> None:
        key = f"{env.id}:{env.trace_ctx.get('ebind-generation')}"
        self.deliveries[key] += 1
        live = msgspec.structs.replace(
            env, attempt=self.deliveries[key], worker_id=worker_id or self.worker_id
        )
        try:
            started = await self.hook.on_step_started(live)
        except StepFailedEarlier:
            self.dead_letters[live.id] += 1  # the real worker stores the dead letter here
            return
        if not started:
            return
        if not run:
            return
        await self.finish(live)

    async def finish(self, live: TaskEnvelope) -> None:
        self.executions[live.id] += 1
        fn = self.handlers[live.name]
        args = msgspec.json.decode(live.payload)
        ctx = SimCtx(
            live, ContextDAG(self.wf, live.dag_id, live.step_id, live.target, live.worker_id)
        )
        try:
            out = fn(ctx, *args)
            if inspect.isawaitable(out):
                out = await out
        except Exception as exc:
            await self.hook.on_step_failed(live, TaskError(kind="handler", message=str(exc)))
        else:
            await self.hook.on_step_done(live, msgspec.json.encode(out))

    async def pump(self) -> int:
        new = self.take_new()
        for env in new:
            await self.deliver(env)
        return len(new)

    async def run_until_terminal(self, dag_id: str, limit: float = 5.0) -> DAGStatus:
        async with asyncio.timeout(limit):
            while True:
                await self.pump()
                try:
                    meta, _ = await self.wf.store.get_meta(dag_id)
                except DAGNotFound:
                    meta = None
                if meta is not None and meta.status.terminal:
                    await self.pump()
                    return meta.status
                await asyncio.sleep(0.005)


def make_wf(**options: Any) -> tuple[Workflow, MemStore, MemBus, CaptureEnqueuer]:
    store = options.pop("store", None) or MemStore()
    bus = MemBus(ack_wait=5.0, error_delay=0.01)
    enq = options.pop("enq", None) or CaptureEnqueuer()
    options.setdefault("nak_delay", 0.01)
    options.setdefault("sweep_check_interval", 0.02)
    options.setdefault("sweep_interval", 0.1)
    options.setdefault("dispatch_grace", 0.05)
    options.setdefault("redispatch_after", 0.3)
    options.setdefault("liveness", MemLiveness(ttl=0.2))
    options.setdefault("liveness_interval", 0.02)
    options.setdefault("liveness_ttl", 0.2)
    wf = Workflow(store, bus, enq, **options)
    return wf, store, bus, enq


@contextlib.asynccontextmanager
async def running(wf: Workflow) -> AsyncIterator[None]:
    """Run ``wf``'s scheduler for the block, then stop it and close the Workflow."""
    task = asyncio.create_task(wf.run_scheduler())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await wf.close()


async def wait_for(cond: Callable[[], object], limit: float = 2.0) -> None:
    """Poll ``cond`` every 2 ms until it holds; fail after ``limit`` seconds."""
    for _ in range(int(limit / 0.002)):
        if cond():
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"condition not met within {limit}s")
