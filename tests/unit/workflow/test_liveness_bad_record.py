"""A malformed liveness record (`alive.<b64(worker id)>` in ebind-leases) is read as no
record: the sweep still evaluates every DAG with a running step of that worker and re-sends
an orphaned step, as it does when the record is missing (the control)."""

from __future__ import annotations

import asyncio

import nats
import pytest
from simworker import SimWorker, make_wf, running
from simworker import wait_for as _until

from ebind import observe
from ebind.app import App
from ebind.embed import Node
from ebind.streams import KV_LEASES, b64_token
from ebind.workflow import DAG, CaptureEnqueuer
from ebind.workflow.liveness import NatsLiveness

pytestmark = pytest.mark.timeout(60)
INC = {"inc": lambda _ctx, x: x + 1}


@pytest.mark.parametrize(
    "record",
    [
        None,  # control: record gone -> re-sent as orphaned
        b"\xff not json",
        b'{"worker_id":"gone","steps":"r9:a"}',  # wrong type
        b"[" * 50_000 + b"]" * 50_000,  # deeply nested
    ],
    ids=["missing", "junk", "wrong-type", "deep"],
)
async def test_a_bad_liveness_record_leaves_the_orphan_rescue_working(
    nats_node: Node, record: bytes | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = nats_node.client_url
    async with App("live", nats_url=url):  # creates the ebind-leases bucket
        pass
    nc = await nats.connect(url)
    js = nc.jetstream()
    enq = CaptureEnqueuer()
    wf, _store, bus, enq = make_wf(
        enq=enq, presence=enq, start_write_delay=0, liveness=NatsLiveness(js, ttl=0.2)
    )
    w = SimWorker(wf, enq, INC)
    dag = DAG(id="r9")
    dag.step("a", "inc", 1)
    await dag.submit(wf)
    reasons: list[str] = []
    fails: list[str] = []
    unsub = observe.subscribe(
        lambda ev, f: reasons.append(str(f["reason"])) if ev == observe.STEP_REDISPATCHED else None
    )
    from ebind.workflow.scheduler import Scheduler

    orig = Scheduler._failed

    async def spy(self, dag_id, batch, exc):  # type: ignore[no-untyped-def]
        fails.append(repr(exc)[:120])
        await orig(self, dag_id, batch, exc)

    monkeypatch.setattr(Scheduler, "_failed", spy)
    subject = f"$KV.{KV_LEASES}.alive.{b64_token('gone')}"
    try:
        env = w.take_new()[0]
        async with running(wf):
            await w.deliver(env, worker_id="gone", run=False)  # started; its worker vanishes
            await asyncio.sleep(0.1)
            wf.hook()._tracker.running.pop("gone", None)  # it stops beating
            await asyncio.sleep(0.1)
            if record is None:
                await js.publish(subject, b"", headers={"KV-Operation": "PURGE"})
            else:
                await js.publish(subject, record)
            await _until(lambda: "orphaned" in reasons, limit=6.0)
            assert not fails, fails[:1]
    finally:
        unsub()
        await js.publish(subject, b"", headers={"KV-Operation": "PURGE"})
        await bus.close()
        await nc.close()
