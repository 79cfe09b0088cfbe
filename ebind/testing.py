"""Pytest fixtures for testing ebind tasks against a real, embedded NATS server.

Enable the plugin in your ``conftest.py`` (it needs ``pytest-asyncio``)::

    pytest_plugins = ["ebind.testing"]

Then a test runs your tasks end to end in a few lines::

    from myproject.tasks import app, resize

    async def test_resize(ebind_app_factory, ebind_worker):
        await ebind_app_factory(app)          # your App, connected to a fresh node
        await ebind_worker(app)               # a worker running in the background
        fut = await resize.delay("img-1", width=100)
        assert await fut.result(timeout=10) == "img-1@100"

Fixtures (all function-scoped; everything they start is stopped afterwards):

- ``ebind_node``: an embedded ``nats-server`` with JetStream on 127.0.0.1, an OS-picked
  port and a temporary store (:class:`ebind.embed.Node`).
- ``ebind_app_factory``: ``await factory(app=None, **App_options)`` points ``app`` (or a new
  ``App("test")``) at ``ebind_node``, connects it on the test's event loop and closes it
  after the test. An App connected already (to another server, or on another loop such as
  the blocking API's) is closed there first, so the test never talks to the wrong server.
- ``ebind_app``: a connected, empty ``App("test")`` (register tasks on it in the test).
- ``ebind_worker``: ``await ebind_worker(app=None, **Worker_options)`` starts
  ``app.worker(...)`` in the background (default: ``ebind_app``; scheduler off unless
  asked, short shutdown grace) and returns the :class:`~ebind.worker.Worker`, once it
  consumes; it is stopped gracefully after the test.
- :func:`running_worker` is the same as an ``async with`` block, for use outside fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

try:
    import pytest_asyncio
except ImportError as exc:  # pragma: no cover - depends on the user's environment
    raise ImportError(
        "ebind.testing needs pytest-asyncio for its async fixtures: pip install pytest-asyncio"
    ) from exc

from ebind.app import App
from ebind.embed import Node, start_node
from ebind.sync import abandon

if TYPE_CHECKING:
    from ebind.worker import Worker

__all__ = [
    "AppFactory",
    "WorkerStarter",
    "ebind_app",
    "ebind_app_factory",
    "ebind_node",
    "ebind_worker",
    "running_worker",
]

AppFactory = Callable[..., Awaitable[App]]
"""``await factory(app=None, **App_options) -> App`` (connected to ``ebind_node``)."""

WorkerStarter = Callable[..., Awaitable["Worker"]]
"""``await start(app=None, **Worker_options) -> Worker`` (running in the background)."""

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


@contextlib.asynccontextmanager
async def running_worker(app: App, **options: Any) -> AsyncIterator[Worker]:
    """Run ``app.worker(**options)`` for the block, then stop it gracefully (bounded).

    Defaults differ from production for fast tests: ``scheduler=False`` (pass True for
    DAG tests), ``shutdown_grace=5``.
    """
    options.setdefault("scheduler", False)
    options.setdefault("shutdown_grace", 5.0)
    worker = app.worker(**options)
    task = asyncio.create_task(worker.run(), name="ebind-testing-worker")
    try:
        await _until_consuming(worker, task)
        yield worker
    finally:
        await worker.stop()
        try:
            await asyncio.wait_for(task, STOP_TIMEOUT)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise


async def _until_consuming(worker: Worker, task: asyncio.Task[None]) -> None:
    # The worker claims its own id once its consumers exist; a failed start ends the task.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT
    while not worker.claims and not task.done():
        if loop.time() > deadline:
            raise TimeoutError(f"ebind worker not consuming within {READY_TIMEOUT}s")
        await asyncio.sleep(0.02)
    if task.done():
        task.result()  # re-raise why it stopped


@pytest.fixture
def ebind_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """An embedded JetStream node on 127.0.0.1 with a temporary store, one per test."""
    store: Path = tmp_path_factory.mktemp("ebind-nats")
    node = start_node(store_dir=store)
    try:
        yield node
    finally:
        node.shutdown()


class _Factory:
    """The ``ebind_app_factory`` callable; remembers its Apps so they close after the test."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.apps: list[App] = []

    async def __call__(self, app: App | None = None, **options: Any) -> App:
        if app is None:
            app = App(options.pop("name", "test"), nats_url=self.node.client_url, **options)
        elif options:
            raise TypeError("pass App options only when the factory creates the App")
        elif not self._serves(app):
            await _disconnect(app)
            app.servers = [self.node.client_url]
        await app.connect()
        if app not in self.apps:
            self.apps.append(app)
        return app

    def _serves(self, app: App) -> bool:
        """True when ``app`` is connected to this node on this loop already (a second call)."""
        return (
            app._nc is not None
            and app._loop is asyncio.get_running_loop()
            and app.servers == [self.node.client_url]
        )


async def _disconnect(app: App) -> None:
    """Close ``app``'s connection wherever it was opened, so that it connects afresh here."""
    loop = app._loop
    if app._nc is None:
        return
    if loop is asyncio.get_running_loop():
        await app.close()
    elif loop is not None and loop.is_running() and app._connected_pid == os.getpid():
        # Its own loop (the blocking API's, another thread's) must run the close.
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(app.close(), loop))
    else:
        # A forked parent's socket must stay open; a stopped loop cannot run a close.
        abandon(app)


@pytest_asyncio.fixture
async def ebind_app_factory(ebind_node: Node) -> AsyncIterator[AppFactory]:
    """Connect Apps (yours or new ones) to ``ebind_node``; each is closed after the test."""
    factory = _Factory(ebind_node)
    try:
        yield factory
    finally:
        for app in reversed(factory.apps):
            await app.close()


@pytest_asyncio.fixture
async def ebind_app(ebind_app_factory: AppFactory) -> App:
    """A connected, empty ``App("test")`` on ``ebind_node``."""
    return await ebind_app_factory()


@pytest_asyncio.fixture
async def ebind_worker(ebind_app_factory: AppFactory) -> AsyncIterator[WorkerStarter]:
    """Start workers in the background; stopped (before the Apps close) after the test.

    Without ``app`` the worker serves the first App the factory connected (``ebind_app``
    when the test uses it), or a new ``App("test")``.
    """
    factory = ebind_app_factory
    assert isinstance(factory, _Factory)

    async def start(app: App | None = None, **options: Any) -> Worker:
        if app is None:
            app = factory.apps[0] if factory.apps else await factory()
        return await stack.enter_async_context(running_worker(app, **options))

    async with contextlib.AsyncExitStack() as stack:
        yield start
