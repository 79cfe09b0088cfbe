"""``pytest_plugins = ["ebind.testing"]`` in a user's project, run through pytester (real NATS)."""

from __future__ import annotations

import pytest
from plugin_runs import run_user_tests

pytest_plugins = ["pytester"]

USER_TESTS = """

@pytest.mark.asyncio
async def test_my_app_against_a_real_node(ebind_app_factory, ebind_worker, ebind_node):
    connected = await ebind_app_factory(app)
    assert connected is app and app.servers == [ebind_node.client_url]
    worker = await ebind_worker(app, concurrency=2)
    assert worker.claims
    assert await (await add.delay(2, b=3)).result(timeout=10) == 5


@pytest.mark.asyncio
async def test_a_fresh_app_and_the_default_worker(ebind_app, ebind_worker):
    @ebind_app.task(name="echo")
    def echo(x: str) -> str:
        return x

    await ebind_worker()  # serves ebind_app
    assert await (await echo.delay("hi")).result(timeout=10) == "hi"


@pytest.mark.asyncio
async def test_nodes_are_per_test(ebind_node, ebind_app):
    info = await ebind_app.js.stream_info("EBIND_TASKS")
    assert info.state.messages == 0  # nothing left over from the tests above
"""


def test_plugin_fixtures_run_user_tasks_end_to_end(pytester: pytest.Pytester) -> None:
    run_user_tests(pytester, USER_TESTS, passed=3)
