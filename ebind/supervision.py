"""Rules of ``ebind worker --processes N``: which flags mean what, and when a child restarts.

``--processes N`` runs N worker processes under one supervising parent; the process pool
for sync handlers is sized by ``--pool-size``. The older spelling ``--pool process
--processes N`` (without ``--pool-size``) still sizes the pool, with a deprecation
warning, so existing command lines keep their meaning.

The supervisor restarts a child that exits while no stop was asked for, after a delay that
doubles with each quick death and resets once a child has lived ``healthy_after`` seconds;
after ``max_quick_deaths`` quick deaths in a row it gives up and the parent exits non-zero.
A child that exits with a usage error (code 2) is never restarted: its command line is
wrong and would be wrong again. Everything here is pure; the IO is
:mod:`ebind.cli.worker_procs`.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

__all__ = [
    "CHILD_ENV",
    "USAGE_EXIT",
    "ChildSlot",
    "GiveUp",
    "ProcessFlags",
    "Restart",
    "RestartPolicy",
    "child_port",
    "child_worker_id",
    "describe_exit",
    "on_child_exit",
    "parse_child_env",
    "resolve_process_flags",
]

CHILD_ENV = "EBIND_WORKER_CHILD"
"""Set by the supervisor in each child's environment: ``index:parent_pid[:nats_url]``."""
USAGE_EXIT = 2
"""Exit code of a command-line error (click's); such a child is not restarted."""

DEPRECATED_PROCESSES = (
    "--processes with --pool process and no --pool-size sets the process pool's size; "
    "this spelling is deprecated: use --pool-size N for the pool, --processes N for "
    "N worker processes"
)


@dataclass(frozen=True)
class ProcessFlags:
    """``--processes`` / ``--pool-size`` resolved: worker processes and the pool's size."""

    workers: int
    """Worker processes to run (1: this process serves, no supervisor)."""
    pool_size: int | None
    """Children of the process pool (None: one per CPU)."""
    warning: str | None = None
    """A deprecation message to print, when the old spelling was used."""


def resolve_process_flags(processes: int | None, pool: str, pool_size: int | None) -> ProcessFlags:
    """What ``--processes`` and ``--pool-size`` mean together.

    Raises:
        ValueError: a count below 1, or ``--pool-size`` without ``--pool process``.
    """
    for name, value in (("--processes", processes), ("--pool-size", pool_size)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if pool_size is not None and pool != "process":
        raise ValueError("--pool-size sizes the process pool: give --pool process with it")
    if processes is not None and pool == "process" and pool_size is None:
        return ProcessFlags(workers=1, pool_size=processes, warning=DEPRECATED_PROCESSES)
    return ProcessFlags(workers=processes or 1, pool_size=pool_size)


def child_port(port: int | None, index: int) -> int | None:
    """Child ``index``'s port for a ``--health-port`` / ``--metrics-port`` of ``port``.

    Each child serves its own endpoint on ``port + index``; 0 (any free port) stays 0.

    Raises:
        ValueError: ``port + index`` is past 65535.
    """
    if port is None or port == 0:
        return port
    if port + index > 65535:
        raise ValueError(f"port {port} + child {index} is past 65535")
    return port + index


def child_worker_id(worker_id: str | None, index: int) -> str | None:
    """Child ``index``'s identity: ``<worker_id>-<index>``, or random (None) when not given."""
    return None if worker_id is None else f"{worker_id}-{index}"


def parse_child_env(value: str) -> ChildSlot:
    """Read :data:`CHILD_ENV` (``index:parent_pid[:nats_url]``).

    Raises:
        ValueError: not of that form.
    """
    index, sep, rest = value.partition(":")
    parent, _, url = rest.partition(":")
    if not sep or not (index + parent).isascii() or not index.isdigit() or not parent.isdigit():
        raise ValueError(f"{CHILD_ENV} must be 'index:parent_pid[:nats_url]', got {value!r}")
    return ChildSlot(index=int(index), parent_pid=int(parent), nats_url=url or None)


@dataclass(frozen=True)
class ChildSlot:
    """Who a supervised child is: its index, its parent's pid, the parent's embedded NATS."""

    index: int
    parent_pid: int
    nats_url: str | None = None

    def env_value(self) -> str:
        """This slot as the value of :data:`CHILD_ENV`."""
        tail = f":{self.nats_url}" if self.nats_url else ""
        return f"{self.index}:{self.parent_pid}{tail}"


@dataclass(frozen=True)
class RestartPolicy:
    """When a dead child is started again (seconds)."""

    first_delay: float = 0.5
    max_delay: float = 30.0
    healthy_after: float = 30.0
    """A child that lived this long died on its own, not in a crash loop: the count resets."""
    max_quick_deaths: int = 5


@dataclass(frozen=True)
class Restart:
    """Start the child again after ``delay`` seconds; ``quick_deaths`` is the new count."""

    delay: float
    quick_deaths: int


@dataclass(frozen=True)
class GiveUp:
    """Stop every child and exit with ``exit_code``; ``reason`` says why."""

    reason: str
    exit_code: int


def on_child_exit(
    returncode: int, uptime: float, quick_deaths: int, policy: RestartPolicy
) -> Restart | GiveUp:
    """What to do when a child exits on its own after ``uptime`` seconds.

    ``quick_deaths`` counts this slot's deaths in a row, each before ``healthy_after``.
    """
    if returncode == USAGE_EXIT:
        return GiveUp("the worker's command line was refused (exit 2)", USAGE_EXIT)
    count = 1 if uptime >= policy.healthy_after else quick_deaths + 1
    if count > policy.max_quick_deaths:
        return GiveUp(
            f"a worker process died {count} times in a row, each within "
            f"{policy.healthy_after:g}s of starting (last: {describe_exit(returncode)})",
            1,
        )
    delay = min(policy.max_delay, policy.first_delay * 2 ** (count - 1))
    return Restart(delay=delay, quick_deaths=count)


def describe_exit(returncode: int) -> str:
    """A process's return code in words: ``exit 3`` or ``killed by SIGKILL``."""
    if returncode >= 0:
        return f"exit {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"
