"""Cluster-wide rate limits on real NATS: three worker processes, keys, waiting, bad records."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
import structlog
from click.testing import CliRunner
from prometheus_client import CollectorRegistry
from rate_app import LIMIT, register
from worker_helpers import dlq_entries, running, wait_for

from ebind.app import App
from ebind.cli import main
from ebind.context import Context
from ebind.contrib.prometheus import prometheus_middleware
from ebind.embed import Node
from ebind.errors import InvalidArguments, TaskFailed
from ebind.ratelimit import RateRecord, decode_record, record_key
from ebind.retry import RetryPolicy
from ebind.streams import KV_RATELIMITS, ensure_streams
from ebind.workflow import DAG, DAGStatus

HERE = Path(__file__).parent
ROOT = HERE.parent.parent.parent


def _rate(starts: list[float]) -> float:
    """Tasks per second between the first start and the last."""
    starts = sorted(starts)
    return (len(starts) - 1) / (starts[-1] - starts[0])


@pytest.fixture
def app(module_app: App) -> App:
    """The tests of this module share one node."""
    return module_app


def _spawn(nats_url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
    cmd = [sys.executable, "-m", "ebind", "worker", "-A", "rate_app:app", "--nats", nats_url]
    return subprocess.Popen(
        [*cmd, "--no-scheduler", "--log-format", "json"],
        cwd=HERE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def _ready(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:  # blocks until the next log line; EOF once the process exits
        if b'"worker.ready"' in line:
            return
    raise AssertionError(f"worker exited with {proc.wait()} before it was ready")


async def test_three_worker_processes_together_hold_the_limit(
    app: App, procs: list[subprocess.Popen[bytes]]
) -> None:
    register(app)
    hit = app.tasks["rl.hit"]
    # The backlog is queued first, so the workers are saturated from the moment they start.
    futures = [await hit.delay(i) for i in range(180)]
    procs.extend(_spawn(app.servers[0]) for _ in range(3))
    for p in procs:
        await asyncio.wait_for(asyncio.to_thread(_ready, p), 30)
    results = [await f.result(timeout=60) for f in futures]
    starts = [r[0] for r in results]
    assert len({r[1] for r in results}) == 3  # every process took part
    # Measured once all three run: from the 30th start to the last.
    steady = sorted(starts)[30:]
    measured = _rate(steady)
    print(f"three workers, limit {LIMIT:g}/s: measured {measured:.1f}/s over {len(steady)} tasks")
    assert LIMIT * 0.9 <= measured <= LIMIT * 1.1
    assert await dlq_entries(app, "rl.hit") == []


async def test_each_key_has_its_own_limit_and_a_call_may_name_its_key(app: App) -> None:
    @app.task(name="rl.per_customer", rate_limit="10/s", rate_key="customer")
    async def per_customer(customer: str, i: int) -> float:
        return time.time()

    async with running(app, concurrency=16):
        futs = {c: [await per_customer.delay(c, i) for i in range(16)] for c in ("a", "b")}
        named = await per_customer.apply_async(("a", 99), rate_key="vip")
        starts = {c: [await f.result(timeout=30) for f in fs] for c, fs in futs.items()}
        assert isinstance(await named.result(timeout=30), float)
    for c in ("a", "b"):
        assert _rate(starts[c]) <= 10 * 1.1
    # Sharing one limit the two keys together would start at 10/s at most.
    assert _rate(starts["a"] + starts["b"]) > 15
    kv = await app.js.key_value(KV_RATELIMITS)
    for key in ("a", "b", "vip"):
        entry = await kv.get(record_key("rl.per_customer", key))
        assert isinstance(decode_record(bytes(entry.value), time.time(), 2.0), RateRecord)


async def test_a_limited_task_waits_and_succeeds_without_using_its_attempts(app: App) -> None:
    @app.task(name="rl.slow", rate_limit="4/s", retry=RetryPolicy.none())
    async def slow(i: int) -> int:
        return i

    registry = CollectorRegistry()
    metrics = prometheus_middleware(registry, app=app)
    try:
        with structlog.testing.capture_logs() as logs:
            async with running(app, concurrency=16, middleware=[metrics]) as w:
                # 3 s of tokens: the first ones are held, the later ones wait as copies
                futs = [await slow.delay(i) for i in range(12)]
                assert [await f.result(timeout=30) for f in futs] == list(range(12))
                admission = w._runner.admission
                assert admission is not None
                assert admission.held > 0 and admission.deferred > 0
    finally:
        metrics.close()
    assert await dlq_entries(app, "rl.slow") == []
    events = {e["event"] for e in logs}
    assert {"task.rate_limited", "task.rate_deferred"} <= events
    assert "task.dead_lettered" not in events
    held = registry.get_sample_value(
        "ebind_rate_limited_total", {"task": "rl.slow", "deferred": "false"}
    )
    deferred = registry.get_sample_value(
        "ebind_rate_limited_total", {"task": "rl.slow", "deferred": "true"}
    )
    assert held == admission.held and deferred == admission.deferred
    waited = registry.get_sample_value("ebind_rate_limit_wait_seconds_total", {"task": "rl.slow"})
    assert waited is not None and waited > 0


@pytest.mark.parametrize(
    "hostile",
    [
        b"not json at all",
        b'{"tat": 1e300, "per_second": 1}',  # booked for ever: would stall the limit
        json.dumps({"tat": time.time() + 86400, "per_second": 5}).encode(),
        json.dumps({"tat": 1, "per_second": 1, "holders": {"x": "y"}}).encode(),
        b"\x00" * 64,
    ],
    # named ids: a record holding time.time() would name the test differently per process
    ids=["not json", "booked for ever", "booked a day ahead", "foreign field", "zero bytes"],
)
async def test_a_corrupt_record_is_reset_and_the_limit_keeps_working(
    app: App, hostile: bytes
) -> None:
    name = f"rl.hostile{abs(hash(hostile)) % 10_000}"

    @app.task(name=name, rate_limit="20/s")
    async def hostile_task(i: int) -> int:
        return i

    kv = await app.js.key_value(KV_RATELIMITS)
    await kv.put(record_key(name, ""), hostile)
    with structlog.testing.capture_logs() as logs:
        async with running(app):
            futs = [await hostile_task.delay(i) for i in range(5)]
            assert [await f.result(timeout=20) for f in futs] == list(range(5))
    assert any(e["event"] == "ratelimit.record_reset" for e in logs)
    entry = await kv.get(record_key(name, ""))
    assert isinstance(decode_record(bytes(entry.value), time.time(), 2.0), RateRecord)
    assert await dlq_entries(app, name) == []


async def test_a_hostile_rate_key_in_a_message_is_dead_lettered_not_used(app: App) -> None:
    @app.task(name="rl.keyed", rate_limit="100/s")
    async def keyed(i: int) -> int:
        return i

    env = msgspec.json.decode(msgspec.json.encode({"id": "t-long-key", "name": "rl.keyed"}))
    env["payload"] = [1]
    env["rate_key"] = "k" * 300
    await app.js.publish("TASKS.rl.keyed", msgspec.json.encode(env))
    async with running(app):
        await wait_for(lambda: _dead(app, "rl.keyed"), 10)
    (entry,) = await dlq_entries(app, "rl.keyed")
    assert entry.error.kind == "invalid" and "rate_key" in entry.error.message


async def _dead(app: App, name: str) -> bool:
    return len(await dlq_entries(app, name)) == 1


async def test_bad_limits_and_keys_are_refused_where_they_are_written(app: App) -> None:
    with pytest.raises(InvalidArguments, match="is not '<number>/<unit>'"):
        app.task(name="rl.bad", rate_limit="fast")(lambda: None)
    with pytest.raises(InvalidArguments, match="must name one of its parameters"):
        app.task(name="rl.bad2", rate_limit="1/s", rate_key="nope")(_takes_customer)
    with pytest.raises(InvalidArguments, match="needs a rate_limit"):
        app.task(name="rl.bad3", rate_key="customer")(_takes_customer)

    plain = app.task(name="rl.plain")(_takes_customer)
    with pytest.raises(InvalidArguments, match="has no rate_limit"):
        await plain.apply_async(("x",), rate_key="k")
    limited = app.task(name="rl.limited", rate_limit="1/s", rate_key="customer")(_takes_customer)
    with pytest.raises(InvalidArguments, match="rate key"):
        await limited.delay("")
    with pytest.raises(InvalidArguments, match="rate key"):
        await limited.apply_async(("x",), rate_key="k" * 300)


def _takes_customer(customer: str) -> str:
    return customer


async def test_operators_list_the_limits_in_use(app: App) -> None:
    @app.task(name="rl.listed", rate_limit="30/m", rate_key="who")
    async def listed(who: str) -> str:
        return who

    async with running(app):
        assert await (await listed.delay("carol")).result(timeout=20) == "carol"
    url = app.servers[0]
    got = await asyncio.to_thread(
        CliRunner().invoke, main, ["--nats", url, "ratelimit", "ls", "--json"]
    )
    assert got.exit_code == 0, got.output
    rows = {(r["task"], r["key"]): r for r in json.loads(got.output)}
    row = rows[("rl.listed", "carol")]
    assert row["per_second"] == pytest.approx(0.5)
    assert row["workers"] == 1
    table = await asyncio.to_thread(CliRunner().invoke, main, ["--nats", url, "ratelimit", "ls"])
    assert table.exit_code == 0
    assert "rl.listed" in table.output and "30/m" in table.output


async def test_a_task_revoked_while_it_waits_for_its_token_never_runs(app: App) -> None:
    ran: list[int] = []

    @app.task(name="rl.revocable", rate_limit="1/s")
    async def revocable(i: int) -> int:
        ran.append(i)
        return i

    async with running(app):
        first = await revocable.delay(1)
        second = await revocable.delay(2)  # its token is a second after the first one's
        assert await first.result(timeout=10) == 1
        await second.revoke()
        with pytest.raises(TaskFailed) as info:
            await second.result(timeout=10)
    assert info.value.error.kind == "revoked"
    assert ran == [1]


async def test_limited_dag_steps_wait_and_the_dag_finishes(app: App) -> None:
    @app.task(name="rl.step", rate_limit="3/s")
    async def step(i: int) -> int:
        return i

    async with running(app, scheduler=True):
        dag = DAG()
        for i in range(9):  # 3 s of tokens: the later steps wait as delayed copies
            dag.step(f"s{i}", step, i)
        await dag.submit(app.workflow)
        done = await app.workflow.wait(dag.id, timeout=40)
        assert done.status is DAGStatus.DONE
        assert [await app.workflow.result(dag.id, f"s{i}", timeout=5) for i in range(9)] == list(
            range(9)
        )
    assert await dlq_entries(app, "rl.step") == []


async def test_while_the_bucket_is_gone_a_task_waits_without_using_attempts(app: App) -> None:
    @app.task(name="rl.outage", rate_limit="50/s", retry=RetryPolicy.none())
    async def outage(ctx: Context) -> int:
        return ctx.attempt

    with structlog.testing.capture_logs() as logs:
        async with running(app):
            assert await (await outage.delay()).result(timeout=10) == 1
            await app.js.delete_stream(f"KV_{KV_RATELIMITS}")
            # the block leased before may still hold a token: spend it, then need the bucket
            futs = [await outage.delay() for _ in range(3)]
            await wait_for(lambda: any(e["event"] == "ratelimit.unavailable" for e in logs), 10)
            await ensure_streams(app.js)
            assert [await f.result(timeout=20) for f in futs] == [1, 1, 1]
    assert await dlq_entries(app, "rl.outage") == []


async def test_a_producer_without_the_code_gets_the_key_from_the_arguments(
    app: App, nats_node_module: Node
) -> None:
    @app.task(name="rl.byname", rate_limit="100/s", rate_key="customer")
    async def byname(customer: str | float, n: int = 0) -> str | float:
        return customer

    producer = App("rl-producer", nats_url=nats_node_module.client_url)
    async with producer, running(app):
        assert await (await producer.enqueue("rl.byname", "zed", 1)).result(10) == "zed"
        # a value that cannot be a key counts against the task-wide limit
        assert await (await producer.enqueue("rl.byname", 7.5)).result(10) == 7.5
        named = await producer.apply_async("rl.byname", ["zed"], rate_key="zed-batch")
        assert await named.result(10) == "zed"
    kv = await app.js.key_value(KV_RATELIMITS)
    for key in ("zed", "", "zed-batch"):
        assert (await kv.get(record_key("rl.byname", key))).value
