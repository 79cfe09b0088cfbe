"""Named crash points for fault tests: ``EBIND_CRASHPOINT=<name>`` kills the process there.

Each point sits in a gap between two writes (a record and a message, a response and an ack)
where a crash leaves half of an operation done; the suite kills a worker, scheduler or
producer exactly there and checks that the system still ends in a correct state. Without the
variable every call is a dictionary-free no-op (one global read).

``EBIND_CRASHPOINT`` holds one or more comma-separated ``name`` or ``name@N`` entries: the
process is SIGKILLed the first (or the N-th) time it reaches that point.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

__all__ = ["ENV", "POINTS", "crashpoint", "parse"]

ENV = "EBIND_CRASHPOINT"

POINTS: dict[str, str] = {
    "worker.after_handler": "the handler returned; no response, step result or ack yet",
    "worker.after_response": "the response is stored; the message is not acked yet",
    "worker.after_dlq": "the dead letter is stored; no response and no term yet",
    "step.after_started": "the step record says running; the handler has not run",
    "step.after_result": "the step's result is stored; its record is not done yet",
    "step.after_done": "the step record is done; its completed event is not published",
    "step.after_failed": "the step record says failed; its dead letter is not stored",
    "dispatch.before_send": "the dispatch is decided; its record and message are not sent",
    "submit.after_steps": "a DAG's step records exist; its meta record does not",
    "sweep.before_resend": "the sweep found a stranded step; it has not re-sent it",
    "sweep.after_bump": "a stranded step's new generation is sent; the record does not show it yet",
    "expirer.before_delete": "an expired task's dead letter and reply are stored; the task "
    "message is not deleted",
}
"""Every crash point and the half-done state a crash there leaves."""


def parse(value: str) -> dict[str, int]:
    """``"a,b@3"`` → ``{"a": 1, "b": 3}``; ValueError names an unknown point or a bad count."""
    armed: dict[str, int] = {}
    for entry in filter(None, (part.strip() for part in value.split(","))):
        name, _, count = entry.partition("@")
        if name not in POINTS:
            known = ", ".join(sorted(POINTS))
            raise ValueError(f"{ENV}: unknown crash point {name!r}; known points: {known}")
        try:
            n = int(count) if count else 1
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"{ENV}: {entry!r}: the count after '@' must be a whole number >= 1")
        armed[name] = n
    return armed


_armed: dict[str, int] | None = parse(os.environ[ENV]) if os.environ.get(ENV) else None
_lock = threading.Lock()


def crashpoint(name: str) -> None:
    """SIGKILL this process if ``name`` is armed in ``$EBIND_CRASHPOINT`` (else do nothing)."""
    if _armed is None:
        return
    with _lock:
        left = _armed.get(name)
        if left is None:
            return
        if left > 1:
            _armed[name] = left - 1
            return
    sys.stderr.write(f"ebind: crash point {name} reached; killing pid {os.getpid()}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
