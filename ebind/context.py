"""Context: what a running handler knows about its task; ``current_context()`` finds it."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ebind.logging import get_logger

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


def current_context() -> Context | None:
    """The Context of the handler running in this task (None outside handlers)."""
    return _current.get()


def set_current(ctx: Context | None) -> contextvars.Token[Context | None]:
    """Install ``ctx`` as the current context; used by the worker around each handler call."""
    return _current.set(ctx)


def reset_current(token: contextvars.Token[Context | None]) -> None:
    """Undo :func:`set_current`."""
    _current.reset(token)
