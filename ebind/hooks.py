"""App-level worker lifecycle hooks: ``@app.on_worker_startup`` / ``@app.on_worker_shutdown``.

Startup hooks run after the App connected and before the worker takes its first task (open
a database pool here); shutdown hooks run after running tasks finished or were abandoned
(close it here). A hook takes the Worker and may be sync or async. A failing startup hook
stops the worker from starting; a failing shutdown hook is logged and the others still run.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ebind.logging import get_logger

__all__ = ["WorkerHook", "WorkerHooks"]

log = get_logger("ebind.worker")

WorkerHook = Callable[[Any], "Awaitable[None] | None"]
"""``hook(worker)``, sync or async."""
H = TypeVar("H", bound=WorkerHook)


def _name(hook: WorkerHook) -> str:
    return getattr(hook, "__qualname__", None) or repr(hook)


@dataclass
class WorkerHooks:
    """The startup and shutdown hooks of one App, in registration order."""

    startup: list[WorkerHook] = field(default_factory=list)
    shutdown: list[WorkerHook] = field(default_factory=list)

    def on_startup(self, hook: H) -> H:
        """Register ``hook`` to run when a worker starts (usable as a decorator)."""
        self.startup.append(_checked(hook))
        return hook

    def on_shutdown(self, hook: H) -> H:
        """Register ``hook`` to run when a worker has stopped (usable as a decorator)."""
        self.shutdown.append(_checked(hook))
        return hook

    async def run_startup(self, worker: Any) -> None:
        """Run every startup hook in order; the first failure propagates."""
        for hook in self.startup:
            try:
                await _call(hook, worker)
            except Exception:
                log.error("worker.startup_hook_failed", hook=_name(hook), exc_info=True)
                raise

    async def run_shutdown(self, worker: Any) -> None:
        """Run every shutdown hook in reverse order; failures are logged, not raised."""
        for hook in reversed(self.shutdown):
            try:
                await _call(hook, worker)
            except Exception:
                log.error("worker.shutdown_hook_failed", hook=_name(hook), exc_info=True)


def _checked(hook: WorkerHook) -> WorkerHook:
    if not callable(hook):
        from ebind.errors import InvalidArguments

        raise InvalidArguments(f"a worker hook must be callable, got {type(hook).__name__}")
    return hook


async def _call(hook: WorkerHook, worker: Any) -> None:
    result = hook(worker)
    if inspect.isawaitable(result):
        await result
