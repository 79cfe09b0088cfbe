"""``ebind_app_factory`` on an App connected already: it ends up on the test's node and loop."""

from __future__ import annotations

import pytest
from plugin_runs import run_user_tests

pytest_plugins = ["pytester"]

USER_TESTS = """
import asyncio
from urllib.parse import urlsplit

from ebind.embed import start_node


def port_of(app):
    return app.nc.connected_url.port


@pytest.mark.asyncio
async def test_factory_points_an_app_of_the_blocking_api_at_this_tests_node(
    ebind_app_factory, ebind_node, ebind_worker, tmp_path
):
    # A module-level App that other code connected earlier in the session (an earlier
    # test of a sync Django view: the blocking API's background loop) to a node of its own.
    with start_node(store_dir=tmp_path) as other:
        app.servers = [other.client_url]
        await asyncio.to_thread(app.sync.connect)
        try:
            connected = await ebind_app_factory(app)
            assert connected.servers == [ebind_node.client_url]
            # The connection in use is this test's node's, on this test's loop ...
            assert port_of(connected) == urlsplit(ebind_node.client_url).port
            # ... so the async API works here, and so do blocking calls from a thread.
            await ebind_worker(app)
            assert await (await add.delay(2, 3)).result(timeout=10) == 5
            res = await asyncio.to_thread(add.sync.delay, 4, 5)
            assert await asyncio.to_thread(res.get, 10) == 9
            assert await ebind_app_factory(app) is app  # a second call keeps the connection
            assert port_of(app) == urlsplit(ebind_node.client_url).port
        finally:
            await asyncio.to_thread(app.sync.close)


@pytest.mark.asyncio
async def test_factory_points_an_app_left_connected_by_an_earlier_loop(
    ebind_app_factory, ebind_node, tmp_path
):
    # An earlier test's loop connected the App and ended without closing it.
    with start_node(store_dir=tmp_path) as other:
        app.servers = [other.client_url]

        def earlier_test():
            asyncio.run(app.connect())

        await asyncio.to_thread(earlier_test)
        connected = await ebind_app_factory(app)
        assert port_of(connected) == urlsplit(ebind_node.client_url).port
        assert await add.send(1, 2)
"""


def test_factory_on_an_already_connected_app(pytester: pytest.Pytester) -> None:
    run_user_tests(pytester, USER_TESTS, passed=2)
