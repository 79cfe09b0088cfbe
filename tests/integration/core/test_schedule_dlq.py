"""countdown/eta via JetStream message schedules; the DLQ API; ensure_streams."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from core_helpers import RunWorker, tasks_count
from structlog.testing import capture_logs

import ebind
from ebind.app import App
from ebind.dlq import requeue_msg_id
from ebind.embed import Node
from ebind.errors import DLQEntryNotFound, InvalidArguments, InvalidName
from ebind.streams import DLQ_STREAM, MAX_CONSUMERS, TASKS_STREAM, ensure_streams


def register(app: App, calls: list[int] | None = None) -> None:
    @app.task(name="sched.add")
    async def add(a: int) -> int:
        if calls is not None:
            calls.append(a)
        return a + 1

    @app.task(name="sched.fail", retry=ebind.RetryPolicy.none())
    def fail(x: int) -> None:
        raise RuntimeError(f"bad {x}")


async def test_countdown_delays_the_task(app: App, run_worker: RunWorker) -> None:
    register(app)
    await run_worker()
    start = time.monotonic()
    fut = await app.tasks["sched.add"].apply_async((1,), countdown=1.5)
    assert await fut.result(timeout=15) == 2
    assert time.monotonic() - start >= 1.4


async def test_eta_publishes_a_schedule_message(app: App) -> None:
    register(app)
    eta = datetime.now(UTC) + timedelta(minutes=5)
    fut = await app.tasks["sched.add"].apply_async((1,), eta=eta)
    raw = await app.js.get_last_msg(TASKS_STREAM, f"TASKS_SCHEDULED.{fut.id}")
    assert raw.headers["Nats-Schedule"].startswith("@at " + eta.strftime("%Y-%m-%dT%H:%M"))
    assert raw.headers["Nats-Schedule-Target"] == "TASKS.sched.add"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"countdown": -1}, "countdown must be a finite number of seconds >= 0"),
        ({"countdown": 1, "eta": datetime.now(UTC)}, "either countdown= or eta="),
        ({"eta": datetime(2030, 1, 1)}, "has no time zone"),
        ({"countdown": timedelta(days=8)}, "the tasks retention horizon of 7 days"),
    ],
)
async def test_bad_schedules_are_rejected(app: App, options: dict[str, object], match: str) -> None:
    register(app)
    before = await tasks_count(app)
    with pytest.raises(InvalidArguments, match=match):
        await app.tasks["sched.add"].apply_async((1,), **options)  # type: ignore[arg-type]
    assert await tasks_count(app) == before


async def test_delayed_task_survives_server_and_worker_restart(nats_node: Node) -> None:
    calls: list[int] = []
    app = App("restart", nats_url=nats_node.client_url, reconnect_time_wait=0.2)
    register(app, calls)
    await app.connect()
    try:
        task_id = (await app.tasks["sched.add"].apply_async((7,), countdown=3.0)).id
        nats_node.kill()
        await asyncio.sleep(0.5)
        nats_node.restart()
        for _ in range(100):
            if app.is_connected:
                break
            await asyncio.sleep(0.1)
        worker = app.worker(scheduler=False, ack_wait=2.0)
        runner = asyncio.create_task(worker.run())
        await asyncio.sleep(0.5)
        await worker.stop()  # a worker restart before the task is due
        await runner
        worker = app.worker(scheduler=False, ack_wait=2.0)
        runner = asyncio.create_task(worker.run())
        try:
            assert await app.future(task_id, name="sched.add").result(timeout=20) == 8
        finally:
            await worker.stop()
            await runner
        assert calls == [7]
    finally:
        await app.close()


async def _dead_letter(app: App, run_worker: RunWorker, n: int) -> list[str]:
    register(app)
    await run_worker()
    futs = [await app.enqueue("sched.fail", i) for i in range(n)]
    for f in futs:
        with pytest.raises(ebind.TaskFailed):
            await f.result(timeout=10)
    for _ in range(50):
        if len(await app.dlq.list()) == n:
            break
        await asyncio.sleep(0.1)
    return [f.id for f in futs]


async def test_dlq_list_and_show(app: App, run_worker: RunWorker) -> None:
    ids = await _dead_letter(app, run_worker, 3)
    letters = await app.dlq.list()
    assert [d.task.id for d in letters if d.task] == ids
    assert [d.entry.error.message for d in letters] == [f"RuntimeError: bad {i}" for i in range(3)]
    assert len(await app.dlq.list(limit=2)) == 2
    shown = await app.dlq.show(letters[1].seq)
    assert shown.entry == letters[1].entry and shown.subject == "DLQ.sched.fail"


async def test_dlq_requeue_is_not_swallowed_by_dedupe(app: App, run_worker: RunWorker) -> None:
    ids = await _dead_letter(app, run_worker, 1)
    letter = (await app.dlq.list())[0]
    assert await app.dlq.requeue(letter.seq) == ids[0]
    with pytest.raises(DLQEntryNotFound, match=f"no dead letter at sequence {letter.seq}"):
        await app.dlq.show(letter.seq)
    # It ran again (and failed again): a new DLQ entry for the same task id.
    for _ in range(50):
        again = await app.dlq.list()
        if again:
            break
        await asyncio.sleep(0.1)
    assert [d.task.id for d in again if d.task] == ids
    assert again[0].entry.final_attempt == 1
    assert requeue_msg_id(ids[0], letter.seq) == f"{ids[0]}:requeue:{letter.seq}"


async def test_dlq_purge_and_missing_entries(app: App, run_worker: RunWorker) -> None:
    await _dead_letter(app, run_worker, 2)
    assert await app.dlq.purge() == 2
    assert await app.dlq.list() == []
    with pytest.raises(DLQEntryNotFound, match="no dead letter at sequence 999"):
        await app.dlq.show(999)
    with pytest.raises(DLQEntryNotFound, match="no dead letter at sequence 999"):
        await app.dlq.requeue(999)
    with pytest.raises(InvalidArguments, match="seq must be a positive integer"):
        await app.dlq.show(0)


async def test_ensure_streams_is_idempotent_with_explicit_consumer_caps(app: App) -> None:
    await ensure_streams(app.js, 1)
    await ensure_streams(app.js, 1)
    tasks = await app.js.stream_info(TASKS_STREAM)
    assert tasks.config.allow_msg_schedules and tasks.config.duplicate_window == 300
    assert tasks.config.max_consumers == MAX_CONSUMERS[TASKS_STREAM]
    for name, cap in MAX_CONSUMERS.items():
        info = await app.js.stream_info(name)
        assert info.config.max_consumers == cap and info.config.num_replicas == 1
    kv = await app.js.key_value("ebind-leases")
    await kv.create("lease", b"x", msg_ttl=2)


async def test_recreating_tasks_under_live_dag_state_warns(app: App) -> None:
    kv = await app.js.key_value("ebind-dags")
    await kv.put("d1.meta", b"{}")
    await app.js.delete_stream(TASKS_STREAM)
    with capture_logs() as logs:
        await ensure_streams(app.js, 1)
    warned = [e for e in logs if e["event"] == "streams.created_missing"]
    assert [e["stream"] for e in warned] == [TASKS_STREAM]
    assert warned[0]["log_level"] == "warning" and warned[0]["dag_keys"] == 1
    assert (await app.js.stream_info(DLQ_STREAM)).config.name == DLQ_STREAM


async def test_dlq_requeue_all_reports_progress_and_takes_only_entries_present_at_the_call(
    app: App, run_worker: RunWorker
) -> None:
    ids = await _dead_letter(app, run_worker, 3)
    assert await app.dlq.count() == 3 and await app.dlq.count("sched.fail") == 3
    assert await app.dlq.count("sched.other") == 0
    seen: list[int] = []
    report = await app.dlq.requeue_all("sched.fail", on_each=seen.append)
    assert sorted(report.task_ids) == sorted(ids) and report.skipped == []
    assert len(seen) == 3
    # Requeued tasks fail again and come back as new entries: a later call takes those.
    for _ in range(50):
        if await app.dlq.count() == 3:
            break
        await asyncio.sleep(0.1)
    assert {d.seq for d in await app.dlq.list()}.isdisjoint(seen)
    with pytest.raises(InvalidName):
        await app.dlq.requeue_all("")
    with pytest.raises(InvalidName):
        await app.dlq.requeue_all("sched.>")  # a wildcard would take other tasks' entries
    # up_to bounds the run: nothing at or below a sequence before the first entry.
    first = min(d.seq for d in await app.dlq.list())
    assert (await app.dlq.requeue_all(up_to=first - 1)).task_ids == []
    assert await app.dlq.count() == 3
