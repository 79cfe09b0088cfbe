"""Publishing: validation before publish, payload limits, dedupe by task_id, the one RESP path."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from core_helpers import RunWorker, tasks_count

import ebind
from ebind.app import App
from ebind.errors import InvalidArguments, NotConnected, PayloadTooLarge, TaskFailed, TaskTimeout
from ebind.streams import RESP_STREAM
from ebind.wire import decode_envelope


class Item(msgspec.Struct):
    sku: str
    qty: int


def register(app: App) -> None:
    @app.task(name="core.add")
    async def add(a: int, b: int = 2) -> int:
        return a + b

    @app.task(name="core.total")
    def total(ctx: ebind.Context, items: list[Item]) -> int:
        return sum(i.qty for i in items)

    @app.task(name="core.echo", retry=ebind.RetryPolicy.none())
    def echo(blob: str) -> int:
        return len(blob)

    @app.task(name="core.fail", retry=ebind.RetryPolicy.none())
    def fail() -> None:
        raise ValueError("nope")


async def test_delay_round_trip_typed_result(app: App, run_worker: RunWorker) -> None:
    register(app)
    await run_worker()
    fut = await app.tasks["core.total"].delay([Item("a", 2), Item("b", 3)])
    assert await fut.result(timeout=10) == 5
    assert await (await app.enqueue("core.add", 1, b=5)).result(timeout=10) == 6


async def test_local_call_runs_in_process(app: App) -> None:
    register(app)
    assert await app.tasks["core.add"](1) == 3
    assert await app.tasks["core.total"]([Item("a", 4)]) == 4


async def test_failure_raises_task_failed_with_the_error(app: App, run_worker: RunWorker) -> None:
    register(app)
    await run_worker()
    fut = await app.enqueue("core.fail")
    with pytest.raises(TaskFailed, match="nope") as info:
        await fut.result(timeout=10)
    assert info.value.error.kind == "handler"


async def test_result_timeout_is_typed(app: App) -> None:
    register(app)
    fut = await app.enqueue("core.add", 1)
    with pytest.raises(TaskTimeout, match=r"no result for task core.add .* within 0.2s"):
        await fut.result(timeout=0.2)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((1, 2, 3), {}, r"at most 2 positional argument\(s\), got 3"),
        (("x",), {}, "argument 'a' expects int, got 'x'"),
        ((1,), {"c": 3}, "unknown keyword argument 'c'"),
        ((), {}, "missing required argument"),
    ],
)
async def test_invalid_arguments_publish_nothing(
    app: App, args: tuple[object, ...], kwargs: dict[str, object], match: str
) -> None:
    register(app)
    before = await tasks_count(app)
    with pytest.raises(InvalidArguments, match=match):
        await app.enqueue("core.add", *args, **kwargs)
    assert await tasks_count(app) == before


async def test_unknown_name_is_published_unvalidated(app: App) -> None:
    fut = await app.enqueue("elsewhere.task", 1, "x")
    raw = await app.js.get_last_msg("EBIND_TASKS", "TASKS.elsewhere.task")
    env = decode_envelope(raw.data)
    assert (env.id, bytes(env.payload)) == (fut.id, b'[1,"x"]')


async def test_unknown_name_rejects_keywords(app: App) -> None:
    with pytest.raises(InvalidArguments, match=r"not registered in this process.*positionally"):
        await app.enqueue("elsewhere.task", x=1)


async def test_payload_at_the_limit_passes_and_one_more_byte_fails(app: App) -> None:
    register(app)
    limit = app.max_payload
    task_id = "size-check-0001"
    echo = app.tasks["core.echo"]
    before = await tasks_count(app)
    # Learn the framing overhead from one rejected message; each blob character is one byte.
    with pytest.raises(PayloadTooLarge) as probe:
        await echo.apply_async(("x" * limit,), task_id=task_id)
    fits = limit - (probe.value.size - limit)
    with pytest.raises(PayloadTooLarge, match=r"encodes to \d+ bytes.*at most \d+ \(max_payload\)"):
        await echo.apply_async(("x" * (fits + 1),), task_id=task_id)
    assert await tasks_count(app) == before
    await app.tasks["core.echo"].apply_async(("x" * fits,), task_id=task_id)
    assert await tasks_count(app) == before + 1


async def test_ten_times_max_payload_is_rejected(app: App) -> None:
    register(app)
    with pytest.raises(PayloadTooLarge) as info:
        await app.enqueue("core.echo", "x" * (10 * app.max_payload))
    assert info.value.limit == app.max_payload


async def test_same_task_id_is_deduplicated(app: App, run_worker: RunWorker) -> None:
    register(app)
    before = await tasks_count(app)
    for _ in range(3):
        await app.tasks["core.add"].apply_async((1,), task_id="same-id")
    assert await tasks_count(app) == before + 1
    await run_worker()
    assert await app.future("same-id", name="core.add").result(timeout=10) == 3


async def test_bad_task_id_and_target_are_rejected(app: App) -> None:
    register(app)
    add = app.tasks["core.add"]
    with pytest.raises(InvalidArguments, match=r"invalid task_id 'a\.b'"):
        await add.apply_async((1,), task_id="a.b")
    with pytest.raises(InvalidArguments, match="target must be a non-empty string"):
        await add.apply_async((1,), target=" ")


async def test_naive_deadline_is_rejected(app: App) -> None:
    register(app)
    with pytest.raises(InvalidArguments, match="has no time zone"):
        await app.tasks["core.add"].apply_async((1,), deadline=datetime.now())


async def test_send_publishes_without_reply_subject(app: App) -> None:
    register(app)
    task_id = await app.tasks["core.add"].send(1)
    raw = await app.js.get_last_msg("EBIND_TASKS", "TASKS.core.add")
    env = decode_envelope(raw.data)
    assert env.id == task_id and env.reply_to == ""


async def test_targeted_task_goes_to_the_target_subject(app: App) -> None:
    register(app)
    await app.tasks["core.add"].apply_async((1,), target="gpu")
    raw = await app.js.get_last_msg("EBIND_TASKS", "TASKS_TARGET.Z3B1.core.add")
    assert decode_envelope(raw.data).target == "gpu"


async def test_expired_deadline_is_not_executed(app: App, run_worker: RunWorker) -> None:
    register(app)
    await run_worker()
    past = datetime.now(UTC) - timedelta(seconds=1)
    fut = await app.tasks["core.add"].apply_async((1,), deadline=past)
    with pytest.raises(TaskFailed) as info:
        await fut.result(timeout=10)
    assert info.value.error.kind == "deadline"


async def test_future_from_id_reads_a_missed_response(app: App, run_worker: RunWorker) -> None:
    register(app)
    await run_worker()
    fut = await app.enqueue("core.add", 40)
    assert await fut.result(timeout=10) == 42
    # A second Future for the same id missed the live message: it asks EBIND_RESP.
    assert await app.future(fut.id, name="core.add").result(timeout=5) == 42


async def test_results_never_create_consumers(app: App, run_worker: RunWorker) -> None:
    register(app)
    await run_worker()
    futs = await asyncio.gather(*(app.enqueue("core.add", i) for i in range(200)))
    assert [await f.result(timeout=20) for f in futs] == [i + 2 for i in range(200)]
    await asyncio.gather(*(app.future(f.id).result(timeout=5) for f in futs[:20]))
    info = await app.js.stream_info(RESP_STREAM)
    assert info.state.consumer_count == 0


async def test_not_connected_is_a_clear_error(nats_url: str) -> None:
    a = App("offline", nats_url=nats_url)
    with pytest.raises(NotConnected, match=r"not connected; call `await app.connect\(\)`"):
        _ = a.js
    with pytest.raises(NotConnected, match="not connected"):
        await a.enqueue("x.y")
