"""Queue tests share one node per module; each test uses its own task names."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from ebind.app import App
from ebind.embed import Node

AppFactory = Callable[[str], AbstractAsyncContextManager[App]]


@pytest.fixture
def service(nats_node_module: Node) -> AppFactory:
    """``async with service("billing") as app``: a connected App, as one service's process."""

    @asynccontextmanager
    async def make(name: str) -> AsyncIterator[App]:
        a = App(name, nats_url=nats_node_module.client_url)
        await a.connect()
        try:
            yield a
        finally:
            await a.close()

    return make
