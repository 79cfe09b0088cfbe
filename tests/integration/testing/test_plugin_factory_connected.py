"""Review finding on ``ebind.testing``: the factory does not point an already-connected App."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = """
import asyncio
from urllib.parse import urlsplit

import pytest

import ebind
from ebind.embed import start_node

app = ebind.App("user")


@app.task(name="user.add")
async def add(a: int, b: int) -> int:
    return a + b


@pytest.mark.asyncio
async def test_factory_points_an_already_connected_app_at_this_tests_node(
    ebind_app_factory, ebind_node, tmp_path
):
    # A module-level App that other code connected earlier in the session: an earlier
    # test of a sync Django view (the blocking API's background connection), here to a
    # node of its own.
    with start_node(store_dir=tmp_path) as other:
        app.servers = [other.client_url]
        await asyncio.to_thread(app.sync.connect)
        try:
            connected = await ebind_app_factory(app)
            # The factory says it points the App at ebind_node and connects it ...
            assert connected.servers == [ebind_node.client_url]
            # ... but the connection in use is still the other node's.
            port = connected.nc.connected_url.port
            assert port == urlsplit(ebind_node.client_url).port, (
                f"app.servers says {connected.servers} but the App talks to port {port} "
                f"(the other node is {other.client_url})"
            )
        finally:
            await asyncio.to_thread(app.sync.close)
"""


def test_factory_on_an_already_connected_app(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["ebind.testing"]\n')
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", timeout=90)
    result.assert_outcomes(passed=1)
