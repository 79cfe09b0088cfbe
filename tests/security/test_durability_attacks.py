"""Accepted work does not vanish without a record: the expirer keeps up past its per-pass
cap, a refused failure response is retried before the task is terminated, and size limits
that would make the server delete results or dead letters silently are warned about at
connect. Real embedded nats-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "integration" / "worker"))

from worker_helpers import dlq_entries, running, wait_for

from ebind import App, Retention
from ebind.expirer import Expirer
from ebind.streams import DLQ_STREAM, RESP_STREAM, TASKS_STREAM

pytestmark = pytest.mark.timeout(60)


def _drained(app: App) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await _count(app, TASKS_STREAM) == 0

    return check


def _has_dead_letter(app: App, name: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(await dlq_entries(app, name))

    return check


async def _count(app: App, stream: str, subject: str | None = None) -> int:
    info = await app.js.stream_info(stream, subjects_filter=subject)
    return int(info.state.messages)


@pytest.mark.parametrize("nats_node", [{"sync_interval": "default"}], indirect=True)
async def test_the_expirer_goes_on_past_its_per_pass_cap_before_max_age(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of unserved tasks larger than one pass's cap is recorded whole.

    With one pass per interval, the cap would bound what is recorded before the server's
    max age deletes the rest (in production 1,000 per 60 s pass over an hour's grace:
    60,000). A pass that stops at its cap with expired messages left starts the next one
    at once. Scaled here to a cap of 25: 400 tasks, a 2 s horizon and 2 s of grace.
    """
    import ebind.expirer as expirer_mod

    monkeypatch.setattr(expirer_mod, "MAX_PER_PASS", 25)
    n = 400
    app = App("exp-cap", nats_url=nats_url, retention=Retention(tasks=2))

    @app.task(name="cap.ghost")
    async def ghost(i: int) -> int:  # served by no worker
        return i

    async with app:
        await ghost.map(range(n))
        assert await _count(app, TASKS_STREAM) == n
        expirer = Expirer(app)
        runner = asyncio.create_task(expirer.run())
        try:
            with contextlib.suppress(AssertionError):  # checked below
                await wait_for(_drained(app), 15)
        finally:
            await expirer.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(runner, 10)
        left = await _count(app, TASKS_STREAM)
        recorded = await _count(app, DLQ_STREAM, "DLQ.cap.ghost")
    assert left == 0, f"{left} still queued after 15 s"
    assert recorded == n, (
        f"{n} accepted tasks, {recorded} dead letters, none left in {TASKS_STREAM}: "
        f"{n - recorded} deleted by max_age without a record"
    )


async def test_a_failure_response_refused_by_a_full_results_stream_is_retried_not_dropped(
    nats_url: str,
) -> None:
    """A failure whose response the results stream refuses is not terminated unanswered.

    The dead letter is stored, then the worker keeps the message and publishes the failure
    response again (with backoff) until the stream takes it, as it does for a result; only
    then is the message terminated. A waiter that reads later (``app.future(task_id)`` from
    another process) gets TaskFailed, not a TaskTimeout for work that is gone.
    """
    from nats.js import api

    from ebind.errors import NonRetryable, TaskFailed
    from ebind.streams import RESP_STREAM

    def make(name: str) -> App:
        app = App(name, nats_url=nats_url)

        @app.task(name="rf.boom")
        async def boom() -> int:
            raise NonRetryable("no")

        return app

    producer, worker_app, reader = make("rf-producer"), make("rf-worker"), make("rf-reader")
    async with worker_app:
        info = await worker_app.js.stream_info(RESP_STREAM)
        # An operator bound with discard "new": the stream refuses while it is full.
        await worker_app.js.update_stream(
            info.config.evolve(max_msgs=1, discard=api.DiscardPolicy.NEW)
        )
        await worker_app.js.publish("RESP.someone.else", b"{}")  # the bound is reached
        async with producer:
            fut = await producer.tasks["rf.boom"].delay()
            task_id, client_id, token = fut.id, producer.client_id, fut.token
        # the producer is gone (a web request that enqueued and returned)
        async with running(worker_app):
            await wait_for(_has_dead_letter(worker_app, "rf.boom"), 10)
            await asyncio.sleep(0.5)
            assert await _count(worker_app, TASKS_STREAM) == 1  # kept: nobody was answered
            info = await worker_app.js.stream_info(RESP_STREAM)
            await worker_app.js.update_stream(info.config.evolve(max_msgs=-1))  # room again
            await wait_for(_drained(worker_app), 15)
        assert [e.error.kind for e in await dlq_entries(worker_app, "rf.boom")] == ["handler"]
    async with reader:
        later = reader.future(task_id, client_id=client_id, token=token)
        with pytest.raises(TaskFailed, match="no"):
            await later.result(timeout=5)


@pytest.mark.parametrize("stream", [RESP_STREAM, DLQ_STREAM])
async def test_a_count_bound_on_results_or_dead_letters_is_warned_about(
    nats_url: str, stream: str
) -> None:
    """An operator's ``max_msgs`` with the server's default "old" discard policy deletes the
    oldest result (without the marker that tells a later waiter it expired) or the oldest
    dead letter (the only record of a failed task) once reached. Nothing in the stream can
    say so afterwards, so connect warns, naming the stream, what it would lose and the fix.
    """
    from structlog.testing import capture_logs

    async with App("bound-setup", nats_url=nats_url) as setup:
        info = await setup.js.stream_info(stream)
        await setup.js.update_stream(info.config.evolve(max_msgs=5))
    with capture_logs() as logs:
        async with App("bound-app", nats_url=nats_url):
            pass
    (warned,) = [e for e in logs if e.get("event") == "streams.silent_discard_configured"]
    assert warned["stream"] == stream and warned["limits"] == {"max_msgs": 5}
    assert "StreamFull" in warned["note"]
