"""Sending a task again with the same id (after a PublishFailed, or an idempotent re-submit)
gives a Future that resolves: the server keeps the first message, whose token the second
call cannot know, so a duplicate publish takes the stored task's answer, whatever token."""

from __future__ import annotations

import pytest
from worker_helpers import running

from ebind.app import App

pytestmark = pytest.mark.timeout(60)


async def _tasks(app: App) -> None:
    @app.task(name="rs.echo")
    async def echo(value: str = "ok") -> str:
        return value


async def test_a_resend_before_the_task_ran_resolves_both_futures(app: App) -> None:
    await _tasks(app)
    first = await app.apply_async("rs.echo", ["v"], task_id="order-1")
    second = await app.apply_async("rs.echo", ["v"], task_id="order-1")  # a duplicate
    assert first.token and second.token == ""
    async with running(app):
        assert await second.result(5) == "v"
        assert await first.result(5) == "v"


async def test_a_resend_after_the_task_finished_reads_its_stored_answer(app: App) -> None:
    await _tasks(app)
    async with running(app):
        first = await app.apply_async("rs.echo", ["v"], task_id="order-2")
        assert await first.result(5) == "v"
        again = await app.apply_async("rs.echo", ["v"], task_id="order-2")
        assert await again.result(5) == "v"


async def test_a_resend_from_another_app_resolves_there_too(app: App, nats_url: str) -> None:
    await _tasks(app)
    first = await app.apply_async("rs.echo", ["v"], task_id="order-3")
    async with App("victim", nats_url=nats_url, client_id=app.client_id) as other:
        second = await other.apply_async("rs.echo", ["v"], task_id="order-3")
        assert second.token == ""
        async with running(app):
            assert await first.result(5) == "v"
            assert await second.result(5) == "v"
