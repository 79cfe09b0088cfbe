"""Context: what a running handler knows about its task; ``current_context()`` finds it."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ebind.logging import get_logger
from ebind.progress import ProgressUnavailable, check_progress

__all__ = ["Context", "current_context"]

_current: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "ebind_context", default=None
)


@dataclass
class Context:
    """The task context passed to handlers whose first parameter is annotated ``Context``."""

    task_id: str
    name: str
    attempt: int = 1
    dag_id: str = ""
    step_id: str = ""
    worker_id: str = ""
    target: str = ""
    deadline: datetime | None = None
    log: Any = field(default_factory=lambda: get_logger("ebind.task"))
    # Middlewares hang per-task objects here (the workflow puts its ContextDAG under "dag").
    extras: dict[str, Any] = field(default_factory=dict)
    # Set by the worker when this task is revoked while it runs; sync handlers poll it.
    revoked: bool = False

    def check_revoked(self) -> None:
        """Raise :class:`ebind.errors.TaskRevoked` if this task was revoked while running."""
        if self.revoked:
            from ebind.errors import TaskRevoked

            raise TaskRevoked(f"task {self.task_id} was revoked")

    # The worker's per-task progress rate limiter (None: direct call or process-pool child).
    progress_sink: Any = None

    async def progress(self, fraction: float, note: str = "") -> None:
        """Report how far this task is (``fraction`` in [0, 1]); readable through its Future."""
        value, text = check_progress(fraction, note)
        await self._sink().report(value, text)

    def progress_sync(self, fraction: float, note: str = "") -> None:
        """:meth:`progress` for sync handlers (runs in a worker thread; does not block)."""
        value, text = check_progress(fraction, note)
        sink = self._sink()
        sink.publisher.report_threadsafe(sink, value, text)

    def _sink(self) -> Any:
        if self.progress_sink is None:
            raise ProgressUnavailable(
                f"progress of task {self.name} {self.task_id} cannot be reported here: only a "
                "worker's event loop or thread pool publishes it (not a direct call of the "
                "handler, not a process-pool child)"
            )
        return self.progress_sink


def current_context() -> Context | None:
    """The Context of the handler running in this task (None outside handlers)."""
    return _current.get()


def set_current(ctx: Context | None) -> contextvars.Token[Context | None]:
    """Install ``ctx`` as the current context; used by the worker around each handler call."""
    return _current.set(ctx)


def reset_current(token: contextvars.Token[Context | None]) -> None:
    """Undo :func:`set_current`."""
    _current.reset(token)
