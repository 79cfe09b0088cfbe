"""ebind under least-privileged NATS users: the frozen permission sets are enough, and no more.

One real nats-server whose users have exactly the sets of ``ebind.permissions`` and
per-user inbox prefixes. The operator provisions the streams and a periodic schedule; a
worker (with the DAG scheduler) and a producer then run tasks (targeted, delayed, failing,
retried), a DAG gated by a signal with a placed step; a second worker takes over and
re-creates a durable the operator deleted; the operator runs its CLI commands. Every flow
must leave no permission violation in the server log; then each role's forbidden moves
are checked one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import structlog
from click.testing import CliRunner

from ebind import App, Concurrency, Context, NonRetryable, RetryPolicy, TaskFailed
from ebind._denied import guarded
from ebind.cli import main
from ebind.embed import Node, start_node
from ebind.errors import PermissionDenied
from ebind.permissions import inbox_prefix_for, operator, producer, server_config, worker
from ebind.queues import LANE_DURABLE_PREFIX, lane_durable, lanes_for
from ebind.streams import (
    DAG_EVENTS_STREAM,
    DLQ_STREAM,
    KV_DAGS,
    KV_LEASES,
    RESP_STREAM,
    TASKS_STREAM,
    purge_stream,
)
from ebind.workflow import DAG, DAGStatus, signal_ref

pytestmark = pytest.mark.timeout(120)

PRODUCER_ID = "orders-api"
PASSWORD = {"operator": "op-pw", "worker": "wk-pw", "producer": "pr-pw", "intruder": "in-pw"}
_VIOLATION = re.compile(r"(Publish|Subscription) Violation.*", re.IGNORECASE)

fired: dict[str, asyncio.Event] = {}


def tasks(app: App) -> None:
    """The handlers the worker runs (registered on each App so producers encode by handle)."""

    @app.task(name="perm.add")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="perm.echo")
    async def echo(value: object = None) -> object:
        return value

    @app.task(name="perm.tick")
    async def tick(tag: str) -> None:
        fired.setdefault(tag, asyncio.Event()).set()

    @app.task(name="perm.flaky", retry=RetryPolicy(initial_interval=0.1, maximum_attempts=3))
    async def flaky(ctx: Context) -> int:
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails on purpose")
        return ctx.attempt

    @app.task(name="perm.progress")
    async def progress(ctx: Context) -> int:
        await ctx.progress(0.5, note="half")
        return 1

    @app.task(name="perm.limited", rate_limit="5/s", rate_key="who")
    async def limited(who: str, i: int) -> int:
        return i

    # hold=0: a second call of one key is re-published with a countdown at once
    @app.task(name="perm.slotted", concurrency=Concurrency(limit=1, key="key", hold=0.0))
    async def slotted(key: str) -> str:
        await asyncio.sleep(0.3)
        return key

    @app.task(name="perm.fail", retry=RetryPolicy.none())
    async def fail() -> None:
        raise NonRetryable("refused on purpose")


def users_config() -> str:
    """The ``authorization`` block: each user has exactly its frozen permission set."""
    return server_config(
        {
            "operator": (
                PASSWORD["operator"],
                operator(inbox_prefix=inbox_prefix_for("operator")),
            ),
            "worker": (PASSWORD["worker"], worker(inbox_prefix=inbox_prefix_for("worker"))),
            "producer": (
                PASSWORD["producer"],
                producer(
                    inbox_prefix=inbox_prefix_for("producer"), client_id=PRODUCER_ID, dags=True
                ),
            ),
            # a second producer, without DAG or countdown rights: the first may not read its replies
            "intruder": (
                PASSWORD["intruder"],
                producer(
                    inbox_prefix=inbox_prefix_for("intruder"), client_id="intruder", countdown=False
                ),
            ),
        }
    )


@pytest.fixture
def secured_node(tmp_path: Path) -> Iterator[Node]:
    """A node whose only users are the three roles (plus a second producer)."""
    node = start_node(store_dir=tmp_path / "store", extra_config=users_config())
    try:
        yield node
    finally:
        node.shutdown()


def url(node: Node, user: str) -> str:
    """The node's URL with ``user``'s credentials."""
    return node.client_url.replace("nats://", f"nats://{user}:{PASSWORD[user]}@")


def app_for(node: Node, user: str, **options: Any) -> App:
    """An App connecting as ``user`` with that user's own inbox prefix."""
    app = App(
        f"perm-{user}",
        nats_url=url(node, user),
        inbox_prefix=inbox_prefix_for(user),
        max_reconnect_attempts=1,
        **options,
    )
    tasks(app)
    return app


def refused_subject(violation: str) -> str:
    """The subject named in one violation line of the server log."""
    m = re.search(r'Subject "([^"]*)"', violation)
    assert m is not None, violation
    return m.group(1)


def violations(node: Node) -> list[str]:
    """Every permission violation the server logged so far."""
    text = node.log_path.read_text(encoding="utf-8", errors="replace")
    return [m.group(0) for m in _VIOLATION.finditer(text)]


@contextlib.asynccontextmanager
async def running_worker(node: Node, worker_id: str = "w1") -> AsyncIterator[App]:
    """A least-privileged worker with the DAG scheduler and a claim, stopped on exit."""
    app = app_for(node, "worker")
    await app.connect()
    w = app.worker(
        worker_id=worker_id, claims=["gpu"], ack_wait=2.0, shutdown_grace=1.0, concurrency=4
    )
    task = asyncio.create_task(w.run())
    try:
        yield app
    finally:
        await w.stop()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        await app.close()


async def provision(node: Node) -> None:
    """The operator provisions every stream and a periodic schedule."""
    async with app_for(node, "operator") as ops:
        await ops.schedule("perm-tick", "perm.tick", ["periodic"], every=1.0)


async def producer_flows(prod: App) -> None:
    """Tasks (plain, targeted, delayed, failing), a late waiter, and a DAG gated by a signal."""
    add = prod.tasks["perm.add"]
    futures = [await add.delay(i, 1) for i in range(5)]
    assert [await f.result(timeout=20) for f in futures] == [1, 2, 3, 4, 5]
    targeted = await add.apply_async((2, 2), target="gpu")
    later = await add.apply_async((40, 2), countdown=0.5)
    assert await targeted.result(timeout=20) == 4
    assert await later.result(timeout=20) == 42
    # a late waiter reads the stored response through a direct get
    assert await prod.future(futures[0].id, name="perm.add").result(timeout=5) == 1
    with pytest.raises(TaskFailed):
        await (await prod.tasks["perm.fail"].delay()).result(timeout=20)
    # progress: the worker writes it, the producer reads its own task's record
    reported = await prod.tasks["perm.progress"].apply_async((), task_id="perm-progress-1")
    assert await reported.result(timeout=20) == 1
    got = await reported.progress()
    assert got is not None and (got.fraction, got.note) == (0.5, "half")
    # concurrency keys: slot leases in the leases bucket, the waiter re-published for later
    both = [await prod.tasks["perm.slotted"].delay("k") for _ in range(2)]
    assert [await f.result(timeout=20) for f in both] == ["k", "k"]
    # a retried task: its second delivery first checks for a stored response
    assert await (await prod.tasks["perm.flaky"].delay()).result(timeout=20) == 2

    # rate limits: leases from the ratelimits bucket; past 2 s of tokens a task is deferred
    # as a delayed copy (12 tasks at 5/s)
    limited = [await prod.tasks["perm.limited"].delay("acme", i) for i in range(12)]
    assert [await f.result(timeout=30) for f in limited] == list(range(12))

    # revoking: the record goes to the leases bucket, which workers list when they start
    revoked = await prod.revoke("perm-unknown-task")
    assert revoked.task_id == "perm-unknown-task"

    wf = prod.workflow
    dag = DAG(id="approval")
    first = dag.step("first", prod.tasks["perm.echo"], "x")
    gated = dag.step("gated", prod.tasks["perm.echo"], signal_ref("go"), after=[first])
    placed = dag.step("placed", prod.tasks["perm.echo"], first.ref(), target="gpu")
    await dag.submit(wf)
    assert await wf.result(dag.id, first, timeout=20) == "x"
    assert await wf.signal(dag.id, "go", {"by": "ops"}) is True
    assert await wf.result(dag.id, gated, timeout=20) == {"by": "ops"}
    assert await wf.result(dag.id, placed, timeout=20) == "x"
    assert (await wf.wait(dag.id, timeout=20)).status is DAGStatus.DONE
    assert [m.id for m in await wf.list_dags()] == ["approval"]


async def run_flows(node: Node) -> None:
    """Provision as the operator, then run the worker and the producer flows together."""
    fired.clear()
    periodic = fired.setdefault("periodic", asyncio.Event())
    await provision(node)
    async with app_for(node, "producer", client_id=PRODUCER_ID) as prod:
        async with running_worker(node):
            await producer_flows(prod)
            await asyncio.wait_for(periodic.wait(), 10)
        # a second worker finds the first one's scheduler lease and liveness record, and
        # re-creates the workers' durable after the operator deleted it
        async with running_worker(node, "w2"), app_for(node, "operator") as ops:
            await ops.js.delete_consumer(TASKS_STREAM, lane_durable("perm.add"))
            assert await (await prod.tasks["perm.add"].delay(2, 2)).result(timeout=30) == 4
            assert [d.task.name for d in await ops.dlq.list() if d.task] == ["perm.fail"]


# What an operator does from the command line after a day's work (in this order).
OPERATOR_COMMANDS = [
    ["stream", "ls"],
    ["stream", "info", TASKS_STREAM],
    ["stream", "peek", DLQ_STREAM],
    ["dag", "ls"],
    ["dag", "get", "approval"],
    ["dag", "tree", "approval"],
    ["dag", "step", "get", "approval", "first"],
    ["dag", "step", "result", "approval", "first"],
    ["dag", "signal", "ls", "approval"],
    ["dag", "bp", "ls", "approval"],
    ["dag", "rm", "approval", "--yes"],
    ["task", "get", "perm-progress-1"],
    ["ratelimit", "ls"],
    ["concurrency", "ls"],
    ["dlq", "ls"],
    ["dlq", "show", "1"],
    ["dlq", "requeue", "1", "--yes"],
    ["dlq", "purge", "--yes"],
    ["schedule", "ls"],
    ["schedule", "rm", "perm-tick", "--yes"],
    ["stream", "purge", DLQ_STREAM, "--yes"],
]


async def test_worker_and_producer_run_tasks_and_a_dag_with_only_their_permissions(
    secured_node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    await run_flows(secured_node)
    assert violations(secured_node) == []
    monkeypatch.setenv("EBIND_NATS_INBOX_PREFIX", inbox_prefix_for("operator"))
    for args in OPERATOR_COMMANDS:
        result = await asyncio.to_thread(
            CliRunner().invoke, main, ["--nats", url(secured_node, "operator"), *args]
        )
        assert result.exit_code == 0, (args, result.output, result.stderr)
    assert violations(secured_node) == []


async def denied_within(seconds: float, awaitable: Awaitable[object]) -> PermissionDenied:
    """The PermissionDenied ``awaitable`` raises, well before any request timeout."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(PermissionDenied) as caught:
        await awaitable
    assert loop.time() - started < seconds
    return caught.value


async def test_the_producer_cannot_purge_consume_or_write_leases(secured_node: Node) -> None:
    await provision(secured_node)
    async with app_for(secured_node, "producer", client_id=PRODUCER_ID) as prod:
        prod_names = prod.registry.names()
        err = await denied_within(2.0, prod.dlq.purge())
        assert err.subject == f"$JS.API.STREAM.PURGE.{DLQ_STREAM}"
        assert "purge stream EBIND_DLQ" in str(err)
        await denied_within(2.0, purge_stream(prod.js, TASKS_STREAM))
        await denied_within(
            2.0,
            guarded(
                prod.js,
                f"$JS.API.STREAM.DELETE.{TASKS_STREAM}",
                prod.js.delete_stream(TASKS_STREAM),
                "delete streams",
            ),
        )
        # pulling from the workers' durable
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{TASKS_STREAM}.{lane_durable('perm.add')}"
        await denied_within(
            2.0,
            guarded(
                prod.nc, next_subject, prod.nc.request(next_subject, b"1", timeout=10), "pull tasks"
            ),
        )
        # running a worker: it may not create the durables
        err = await denied_within(5.0, prod.worker(worker_id="sneaky", scheduler=False).run())
        assert LANE_DURABLE_PREFIX in str(err)
        # periodic schedules are the operator's
        await denied_within(2.0, prod.schedule("mine", "perm.tick", ["x"], every=1.0))
        await denied_within(2.0, prod.unschedule("perm-tick"))
        await denied_within(2.0, prod.schedules())
        # taking over the scheduler lease
        lease = f"$KV.{KV_LEASES}.scheduler"
        await denied_within(
            2.0,
            guarded(prod.js, lease, prod.js.publish(lease, b"mine", timeout=10), "write leases"),
        )
        # another client's result
        err = await denied_within(2.0, prod.future("t1", client_id="intruder").result(timeout=10))
        assert err.action == f"read from stream {RESP_STREAM}"
        # a refusal no request takes as its own is a warning in the App's log
        with structlog.testing.capture_logs() as logs:
            await prod.nc.subscribe("_INBOX.>")
            # The server sends the refusal before the flush's PONG, yet under heavy load the
            # warning was once not logged when the flush returned: wait for it, bounded.
            await prod.nc.flush()
            for _ in range(100):
                if any(e["event"] == "nats.permission_denied" for e in logs):
                    break
                await asyncio.sleep(0.05)
        assert [e for e in logs if e["event"] == "nats.permission_denied"] == [
            {
                "event": "nats.permission_denied",
                "log_level": "warning",
                "app": "perm-producer",
                "operation": "subscription",
                "subject": "_inbox.>",
            }
        ]
    # the server logged each refusal, and nothing else was refused
    first = lanes_for(prod_names, ["default"])[0]
    assert {refused_subject(line) for line in violations(secured_node)} == {
        f"$JS.API.STREAM.PURGE.{DLQ_STREAM}",
        f"$JS.API.STREAM.PURGE.{TASKS_STREAM}",
        f"$JS.API.STREAM.DELETE.{TASKS_STREAM}",
        next_subject,
        # the would-be worker looks for the shared durable of older releases, reads its
        # first lane's ack_wait, then tries to create that lane
        f"$JS.API.CONSUMER.INFO.{TASKS_STREAM}.ebind-worker",
        f"$JS.API.CONSUMER.INFO.{TASKS_STREAM}.{first.durable}",
        f"$JS.API.CONSUMER.CREATE.{TASKS_STREAM}.{first.durable}.{first.subject}",
        # the would-be worker's watch for messages out of deliveries
        f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{TASKS_STREAM}.*",
        f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{DAG_EVENTS_STREAM}.*",
        # ... and its subscription to revocations (producers may write them, not follow them)
        f"$KV.{KV_LEASES}.revoked.>",
        "TASKS_SCHEDULES.mine",
        f"$JS.API.STREAM.MSG.GET.{TASKS_STREAM}",
        lease,
        f"$JS.API.DIRECT.GET.{RESP_STREAM}.RESP.intruder.t1",
        "_INBOX.>",
    }


async def test_a_plain_producer_may_follow_but_not_submit_dags(secured_node: Node) -> None:
    await provision(secured_node)
    async with app_for(secured_node, "intruder", client_id="intruder") as plain:
        dag = DAG(id="not-mine")
        dag.step("a", plain.tasks["perm.echo"], 1)
        err = await denied_within(2.0, dag.submit(plain.workflow))
        assert err.action == "write to KV bucket ebind-dags"
        assert await plain.workflow.list_dags() == []
        # a producer without countdown rights: its delayed publish is refused at once
        err = await denied_within(2.0, plain.tasks["perm.add"].apply_async((1, 2), countdown=5))
        assert err.action == "publish delayed tasks (countdown / eta)"
        # its plain tasks are still published, and their results are its own; it follows
        # a DAG the operator submitted
        async with running_worker(secured_node), app_for(secured_node, "operator") as ops:
            fut = await plain.tasks["perm.add"].delay(1, 2)
            assert await fut.result(timeout=20) == 3
            theirs = DAG(id="operators")
            step = theirs.step("a", ops.tasks["perm.echo"], "followed")
            await theirs.submit(ops.workflow)
            assert await plain.workflow.result(theirs.id, step, timeout=20) == "followed"
            assert (await plain.workflow.wait(theirs.id, timeout=20)).status is DAGStatus.DONE
    # only the two refusals above: following the DAG needed nothing it lacks
    refused = sorted(refused_subject(v) for v in violations(secured_node))
    # (the submit's writes go out together: its live-index entry and its step records)
    assert {r.split(".", 1)[0] for r in refused} == {"$KV", "TASKS_SCHEDULED"}, refused
    assert all(r.startswith(f"$KV.{KV_DAGS}.") for r in refused if r.startswith("$KV")), refused
    assert sum(r.startswith("TASKS_SCHEDULED") for r in refused) == 1, refused


async def test_one_user_cannot_read_another_users_replies_or_results(secured_node: Node) -> None:
    await provision(secured_node)
    errors: list[str] = []
    all_six = asyncio.Event()

    async def collect(exc: Exception) -> None:
        errors.append(str(exc))
        if len(errors) == 6:
            all_six.set()

    nc = await nats.connect(
        url(secured_node, "intruder"),
        inbox_prefix=inbox_prefix_for("intruder"),
        error_cb=collect,
        max_reconnect_attempts=1,
    )
    try:
        for subject in (
            "_INBOX.>",
            f"{inbox_prefix_for('producer')}.>",
            f"RESP.{PRODUCER_ID}.>",
            "RESP.>",
            f"{TASKS_STREAM}.>",
        ):
            await nc.subscribe(subject)
        await nc.flush()
        # reading another client's stored response by direct get
        await nc.publish(f"$JS.API.DIRECT.GET.{RESP_STREAM}.RESP.{PRODUCER_ID}.some-task", b"")
        await nc.flush()
        await asyncio.wait_for(all_six.wait(), 5)
    finally:
        await nc.close()
    assert sorted(errors) == sorted(
        [
            'nats: permissions violation for subscription to "_inbox.>"',
            'nats: permissions violation for subscription to "_inbox_producer.>"',
            f'nats: permissions violation for subscription to "resp.{PRODUCER_ID}.>"',
            'nats: permissions violation for subscription to "resp.>"',
            'nats: permissions violation for subscription to "ebind_tasks.>"',
            "nats: permissions violation for publish to "
            f'"$js.api.direct.get.ebind_resp.resp.{PRODUCER_ID}.some-task"',
        ]
    )


async def test_without_provisioned_streams_a_worker_gets_a_clear_error(
    secured_node: Node,
) -> None:
    app = app_for(secured_node, "worker")
    err = await denied_within(5.0, app.connect())
    assert str(err).startswith(f"stream {TASKS_STREAM} does not exist and this NATS user may not")
    assert "ebind stream provision" in str(err)
    assert not app.is_connected


def cli(node: Node, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``ebind <args>`` in a subprocess as ``user`` (URL and inbox prefix from the env)."""
    env = {
        **os.environ,
        "EBIND_NATS_URL": url(node, user),
        "EBIND_NATS_INBOX_PREFIX": inbox_prefix_for(user),
        "EBIND_CLIENT_ID": user,
    }
    return subprocess.run(
        [sys.executable, "-m", "ebind", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_operator_provisions_and_a_producer_purge_is_one_error_line(
    secured_node: Node,
) -> None:
    made = cli(secured_node, "operator", "stream", "provision")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("provisioned 8 streams: EBIND_TASKS, ")
    refused = cli(secured_node, "producer", "stream", "purge", DLQ_STREAM, "--yes")
    assert refused.returncode == 1, refused
    assert refused.stdout == ""
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith(
        "Error: permission denied: this NATS user may not purge stream EBIND_DLQ"
    ), refused.stderr


async def test_a_worker_lists_more_than_a_batch_of_revocations(secured_node: Node) -> None:
    # Past the server's 1024 subjects per batched read the listing falls back to a
    # short-lived consumer, which the worker's permissions must let it read and remove.
    from ebind.worker.revoked import _ALWAYS_READ, Revocations

    await provision(secured_node)
    ids = [f"rv{i}" for i in range(1030)]
    async with app_for(secured_node, "operator") as ops:
        await asyncio.gather(*(ops.js.publish(f"$KV.{KV_LEASES}.revoked.{i}", b"{}") for i in ids))
    before = len(violations(secured_node))
    app = app_for(secured_node, "worker")
    await app.connect()
    try:
        revs = Revocations(app.nc)
        await asyncio.wait_for(revs.load(app.js), 20)
        assert revs._since_ns != _ALWAYS_READ
        assert set(ids) <= revs._ids
    finally:
        await app.close()
    assert violations(secured_node)[before:] == []
