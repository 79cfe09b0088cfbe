"""The producer path keeps track of what it sent: a batch through a server stall names every
task that may run, a cancelled batch logs what it published, an ``ignore_result`` call has no
result to wait for, and out-of-range times are refused by name."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing

sys.path.insert(0, str(Path(__file__).parent.parent / "integration" / "worker"))

from worker_helpers import running

from ebind import App
from ebind.embed import Node
from ebind.errors import InvalidArguments, PublishFailed
from ebind.streams import TASKS_STREAM

pytestmark = pytest.mark.timeout(60)


async def _stored_ids(app: App) -> set[str]:
    """The Nats-Msg-Id of every task message now in EBIND_TASKS."""
    info = await app.js.stream_info(TASKS_STREAM)
    ids = set()
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await app.js.get_msg(TASKS_STREAM, seq)
        except Exception:
            continue
        ids.add((msg.headers or {}).get("Nats-Msg-Id", ""))
    return ids


def _echo(app: App, name: str) -> Any:
    @app.task(name=name)
    async def echo(x: int) -> int:
        return x

    return echo


@contextlib.asynccontextmanager
async def _stalled(node: Node) -> AsyncIterator[None]:
    """The server stopped (SIGSTOP) for the block, then resumed."""
    assert node.pid is not None
    os.kill(node.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(node.pid, signal.SIGCONT)


async def test_a_map_through_a_server_stall_names_every_task_that_may_run(
    nats_node: Node,
) -> None:
    """A server stall longer than publish_timeout in the middle of a map: every publish of
    the batch is stored once the server resumes. The raised PublishFailed puts the Future of
    every task whose outcome is unknown on ``.unconfirmed`` (and the confirmed ones on
    ``.accepted``), so the caller can wait on each or send it again under its id.
    """
    async with App("rev11", nats_url=nats_node.client_url, publish_timeout=1.0) as app:
        async with _stalled(nats_node):  # a stall: disk, GC, a paused VM
            batch = asyncio.create_task(_echo(app, "rev.stall").map(range(50)))
            await asyncio.sleep(1.5)  # past publish_timeout: the PubAcks are overdue
        with pytest.raises(PublishFailed) as caught:
            await batch
        err = caught.value
        await asyncio.sleep(0.5)
        stored = await _stored_ids(app)
        assert len(stored) == 50  # the server stored every one of them
        assert len(err.unconfirmed) + len(err.accepted) == 50
        reported = {err.task_id} | {f.id for f in err.accepted} | {f.id for f in err.unconfirmed}
        text = str(err) + "".join(getattr(err, "__notes__", []))
        unreported = {i for i in stored if i not in reported and i not in text}
        assert not unreported, (
            f"{len(unreported)} of 50 stored tasks appear nowhere in the raised error "
            f"(task_id={err.task_id}, {len(err.accepted)} accepted)"
        )


async def test_cancelling_a_map_leaves_a_record_of_what_it_published(nats_node: Node) -> None:
    """Cancel the coroutine awaiting a map after its publishes went out: every task is
    stored and will run, and though the caller only sees CancelledError, a warning names
    the tasks published without a confirmation (``task.batch_cancelled``).
    """
    async with App("rev11", nats_url=nats_node.client_url, publish_timeout=5.0) as app:
        with structlog.testing.capture_logs() as logs:
            async with _stalled(nats_node):
                batch = asyncio.create_task(_echo(app, "rev.cancel").map(range(50)))
                await asyncio.sleep(0.3)  # every publish written, no PubAck yet
                batch.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await batch
            await asyncio.sleep(0.5)
            stored = await _stored_ids(app)
        assert len(stored) == 50  # all of them will run
        (event,) = [e for e in logs if e.get("event") == "task.batch_cancelled"]
        assert event["log_level"] == "warning"
        # Every one, the one whose PubAck was awaited when the cancel landed included.
        assert set(event["task_ids"]) == stored and event["published_unconfirmed"] == 50


async def test_result_of_an_ignore_result_call_fails_instead_of_hanging(app: App) -> None:
    """``apply_async(ignore_result=True)`` returns a Future whose ``result()`` can never be
    answered (no reply subject): it raises InvalidArguments at once instead of waiting.
    """

    @app.task(name="rev.quiet")
    async def quiet(x: int) -> int:
        return x

    async with running(app):
        fut = await quiet.apply_async((1,), ignore_result=True)
        await asyncio.sleep(1.0)  # the task ran and finished; no response exists by design
        with pytest.raises(InvalidArguments, match="ignore_result=True"):
            await asyncio.wait_for(fut.result(), 3)


@pytest.mark.parametrize(
    "option",
    [{"countdown": 1e300}, {"countdown": timedelta.max}, {"deadline": 1e300}],
    ids=["countdown-1e300", "countdown-timedelta.max", "deadline-1e300"],
)
async def test_an_out_of_range_countdown_or_deadline_is_invalid_arguments(
    app: App, option: dict[str, object]
) -> None:
    """A huge finite countdown/deadline is refused by name, not by a bare OverflowError."""

    @app.task(name="rev.far")
    async def far(x: int) -> int:
        return x

    with pytest.raises(InvalidArguments):
        await far.apply_async((1,), **option)  # type: ignore[arg-type]


async def test_an_eta_before_year_1000_is_not_reported_as_maybe_stored(app: App) -> None:
    """A past eta runs at once, one before year 1000 too: the schedule's time is written
    with a four-digit year, which the server accepts."""

    @app.task(name="rev.old")
    async def old(x: int) -> int:
        return x

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        await old.apply_async((1,), eta=datetime(999, 1, 2, tzinfo=UTC))
    except InvalidArguments:
        return  # refusing it up front is fine too
    except PublishFailed as exc:
        pytest.fail(f"after {loop.time() - t0:.2f}s: {exc}")
