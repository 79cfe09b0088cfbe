"""Several Futures of one task id share one live waiter: each one's token is accepted, and
dropping one leaves the waiter to the others.

The stream fallback (a direct get every few seconds) would hide a dropped live answer, so
these tests take it away: a Future here resolves only through the live path, or through
the stored answer read before it starts waiting.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from worker_helpers import running

from ebind.app import App
from ebind.errors import PublishFailed

pytestmark = pytest.mark.timeout(60)


async def _tasks(app: App) -> None:
    @app.task(name="rw.sleep")
    async def sleep(seconds: float) -> float:
        """Answers with the seconds it slept."""
        await asyncio.sleep(seconds)
        return seconds


def _live_only(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    async def nothing_stored(*args: Any, **kwargs: Any) -> None:
        return None

    assert app._router is not None
    monkeypatch.setattr(app._router, "fetch", nothing_stored)


async def test_a_resend_inside_the_except_block_takes_its_own_answer(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resend the PublishFailed message advises, written where the first call's Future
    is still alive: the first publish stored nothing, so the task carries the resend's
    token, which the shared waiter must accept beside the first one's."""
    await _tasks(app)
    _live_only(app, monkeypatch)
    assert app._publisher is not None
    real = app._publisher._confirmed
    calls = 0

    async def first_one_lost(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TimeoutError("no PubAck")  # nothing was sent: nothing stored
        return await real(*args, **kwargs)

    monkeypatch.setattr(app._publisher, "_confirmed", first_one_lost)
    async with running(app):
        try:
            fut = await app.apply_async("rw.sleep", [0.0], task_id="resend-1")
        except PublishFailed:
            fut = await app.apply_async("rw.sleep", [0.0], task_id="resend-1")
            assert fut.token  # not a duplicate: the stored task is this call's
            assert await fut.result(10) == 0.0


async def test_a_duplicate_of_a_finished_task_reads_the_stored_answer_first(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _tasks(app)
    async with running(app):
        first = await app.apply_async("rw.sleep", [0.0], task_id="resend-2")
        assert await first.result(5) == 0.0
        again = await app.apply_async("rw.sleep", [0.0], task_id="resend-2")
        assert again.token == ""

        async def no_waiting(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("the Future waited for an answer that was already stored")

        assert app._router is not None
        monkeypatch.setattr(app._router, "sleep", no_waiting)
        assert await again.result(5) == 0.0


@pytest.mark.parametrize("second", ["rebuilt", "duplicate"])
async def test_dropping_a_second_handle_leaves_the_first_its_waiter(
    app: App, monkeypatch: pytest.MonkeyPatch, second: str
) -> None:
    await _tasks(app)
    _live_only(app, monkeypatch)
    async with running(app):
        f1 = await app.apply_async("rw.sleep", [0.5], task_id=f"shared-{second}")
        if second == "rebuilt":
            app.future(f1.id)  # dropped at once
        else:
            await app.apply_async("rw.sleep", [0.5], task_id=f1.id)  # a duplicate, dropped
        assert await f1.result(10) == 0.5
