"""CLI test helpers: an App + worker on a background event loop, CliRunner wrappers.

CliRunner commands call ``asyncio.run`` themselves, so they cannot run inside the test's
event loop; the worker (and anything the test must do on the App) runs on a loop in a
separate thread instead, and tests are plain synchronous functions.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import nats
from click.testing import CliRunner, Result

from ebind.app import App
from ebind.cli import main
from ebind.errors import NonRetryable
from ebind.workflow.dag import DAG

T = TypeVar("T")


def add(a: int, b: int) -> int:
    """Sum two numbers."""
    return a + b


def total(xs: list[int]) -> int:
    """Sum a list."""
    return sum(xs)


def explode(n: int) -> int:
    """Fail for good (straight to the DLQ, no retries)."""
    raise NonRetryable(f"cannot handle {n}")


class Background:
    """An App with a running worker on an event loop in its own thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.app = App("clitest", nats_url=url)
        self.app.task(name="add")(add)
        self.app.task(name="total")(total)
        self.app.task(name="explode")(explode)
        self.worker: Any = None
        self._task: asyncio.Task[None] | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
        """Run ``coro`` on the background loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def later(self, delay: float, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` on the background loop after ``delay`` seconds (fire and forget)."""

        async def go() -> None:
            await asyncio.sleep(delay)
            await coro

        asyncio.run_coroutine_threadsafe(go(), self.loop)

    async def _start(self) -> None:
        await self.app.connect()
        self.worker = self.app.worker(concurrency=8)
        self._task = asyncio.create_task(self.worker.run())

    def start(self) -> None:
        """Connect and start the worker (with the scheduler)."""
        self.run(self._start())

    async def _stop(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
        if self._task is not None:
            await asyncio.wait_for(self._task, 10)
        await self.app.workflow.close()  # the step hook's liveness loop
        await self.app.close()

    def stop(self) -> None:
        """Stop the worker, close the App, end the loop thread."""
        try:
            self.run(self._stop(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    def submit(self, dag: DAG, active_breakpoints: tuple[str, ...] = ()) -> str:
        """Submit ``dag`` and return its id."""
        self.run(dag.submit(self.app.workflow, active_breakpoints=active_breakpoints))
        return dag.id

    def wait_done(self, dag_id: str, step_id: str) -> Any:
        """Wait for a step's result."""
        return self.run(self.app.workflow.result(dag_id, step_id, timeout=15))

    def wait_status(self, dag_id: str, *statuses: str, timeout: float = 15.0) -> str:
        """Poll the DAG meta until its status is one of ``statuses``."""

        async def poll() -> str:
            async with asyncio.timeout(timeout):
                while True:
                    meta, _ = await self.app.workflow.store.get_meta(dag_id)
                    if meta.status.value in statuses:
                        return str(meta.status.value)
                    await asyncio.sleep(0.05)

        return self.run(poll(), timeout=timeout + 5)


def invoke(url: str, *args: str, input: str | None = None) -> Result:
    """Run ``ebind --nats <url> <args>`` through CliRunner (stdout and stderr kept apart)."""
    return CliRunner().invoke(main, ["--nats", url, *args], input=input)


def assert_clean_error(result: Result, *fragments: str) -> None:
    """Exit code 1, one ``Error:`` line on stderr naming every fragment, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def publish_raw(url: str, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
    """Store ``data`` on ``subject`` as another tool would (the ebind streams made first)."""

    async def go() -> None:
        async with App("hostile", nats_url=url):  # makes sure the streams exist
            pass
        nc = await nats.connect(url)
        try:
            await nc.jetstream().publish(subject, data, headers=headers)
        finally:
            await nc.close()

    asyncio.run(go())
