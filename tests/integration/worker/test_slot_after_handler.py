"""A handler's slot is free once it returns, while its response is stored; at most
``concurrency`` messages finish so, the rest keep their slots until their response is in."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ebind.app import App
from ebind.worker.runner import AttemptRunner
from tests.integration.worker.worker_helpers import running, wait_for


async def test_the_next_handler_runs_while_a_response_is_being_stored(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[int] = []
    stored = asyncio.Event()
    respond = AttemptRunner._respond

    async def slow_store(self: AttemptRunner, env: Any, **kw: Any) -> bool:
        await stored.wait()  # as if EBIND_RESP took long to acknowledge (a far leader)
        return await respond(self, env, **kw)

    monkeypatch.setattr(AttemptRunner, "_respond", slow_store)

    @app.task(name="slot.record")
    async def record(i: int) -> int:
        ran.append(i)
        return i * 10

    async with running(app, concurrency=1) as worker:
        futs = [await record.delay(i) for i in range(3)]
        # One slot: the first handler returned and its response waits, yet a second ran.
        await wait_for(lambda: len(ran) == 2)
        await asyncio.sleep(0.5)
        # The second keeps its slot (one message already finishes without one), so the
        # third waits: the worker holds at most twice its concurrency in handled messages.
        # The slot in use is the second's; the third arrived by the lane's probe.
        assert len(ran) == 2
        assert worker.held_count == 3 and worker.in_flight == 1
        stored.set()
        assert [await f.result(10) for f in futs] == [0, 10, 20]
        assert sorted(ran) == [0, 1, 2]
        await wait_for(lambda: worker.held_count == 0)
