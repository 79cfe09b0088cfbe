"""Which pool runs a sync handler, and the checks of the pool options (pure functions).

The IO (child processes, pipes, SIGKILL) is :mod:`ebind.worker.procpool`.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from datetime import datetime

from ebind.wire import ErrorKind, TaskError

__all__ = [
    "POOLS",
    "PoolSettings",
    "check_pool_settings",
    "check_task_pool",
    "death_error",
    "limit_at_dispatch",
    "runs_in_process",
    "start_method",
]

POOLS = ("thread", "process")
"""Where a worker runs its sync handlers: its thread pool or child processes."""


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """A worker's checked pool options (``processes`` is resolved to a number)."""

    pool: str = "thread"
    processes: int = 1
    max_tasks_per_child: int | None = None


def check_task_pool(pool: object, *, is_async: bool, task_name: str) -> str | None:
    """The ``pool=`` option of ``@app.task`` checked: None, "thread" or "process".

    Raises ValueError naming the problem: an unknown pool, or "process" for an ``async def``
    handler (async handlers run on the worker's event loop, never in a child).
    """
    if pool is None:
        return None
    if not isinstance(pool, str) or pool not in POOLS:
        raise ValueError(f"task {task_name!r}: pool must be one of {POOLS} or None, got {pool!r}")
    if pool == "process" and is_async:
        raise ValueError(
            f"task {task_name!r}: pool='process' is for plain def handlers; an async def "
            "handler runs on the worker's event loop"
        )
    return pool


def check_pool_settings(
    pool: object, processes: object, max_tasks_per_child: object, *, cpu_count: int | None
) -> PoolSettings:
    """A worker's ``pool`` / ``processes`` / ``max_tasks_per_child`` checked and resolved.

    ``processes`` None means one child per CPU (``cpu_count``, at least 1). Raises
    ValueError naming the bad option.
    """
    if not isinstance(pool, str) or pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    if processes is None:
        count = max(cpu_count or 1, 1)
    elif isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be an integer >= 1, got {processes!r}")
    else:
        count = processes
    if max_tasks_per_child is not None and (
        isinstance(max_tasks_per_child, bool)
        or not isinstance(max_tasks_per_child, int)
        or max_tasks_per_child < 1
    ):
        raise ValueError(
            f"max_tasks_per_child must be an integer >= 1 or None, got {max_tasks_per_child!r}"
        )
    return PoolSettings(pool=pool, processes=count, max_tasks_per_child=max_tasks_per_child)


def runs_in_process(is_async: bool, task_pool: str | None, worker_pool: str) -> bool:
    """Whether a handler runs in a child: sync, and its own pool (else the worker's) is process."""
    if is_async:
        return False
    return (task_pool or worker_pool) == "process"


def death_error(exitcode: int | None, task_name: str) -> TaskError:
    """The error of a call whose child died on its own (a signal or an exit, not our kill)."""
    if exitcode is not None and exitcode < 0:
        try:
            how = f"was killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"was killed by signal {-exitcode}"
    elif exitcode is None:
        how = "closed its pipe and did not exit"
    else:
        how = f"exited with code {exitcode}"
    return TaskError(
        kind=ErrorKind.WORKER_LOST.value,
        message=f"the child process running {task_name!r} {how} before it answered",
        retryable=True,
    )


def start_method(available: list[str]) -> str:
    """``forkserver`` when the platform has it, else ``spawn`` (never ``fork``)."""
    return "forkserver" if "forkserver" in available else "spawn"


def limit_at_dispatch(
    limit: float | None, deadline: datetime | None, now: datetime
) -> float | None:
    """Seconds a call may run once a child takes it: ``limit`` cut to the deadline's rest.

    0.0 when the deadline passed while the call waited for a free child.
    """
    if deadline is None:
        return limit
    left = max((deadline - now).total_seconds(), 0.0)
    return left if limit is None or left < limit else limit
