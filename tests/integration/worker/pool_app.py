"""App whose sync handlers run in process-pool children (imported there as ``pool_app:app``)."""

from __future__ import annotations

import os
import time

from ebind.app import App
from ebind.context import Context
from ebind.retry import RetryPolicy

app = App("pooltest")


@app.task(name="pool.square")
def square(x: int) -> dict[str, int]:
    """x squared, with the pid that computed it."""
    return {"value": x * x, "pid": os.getpid()}


@app.task(name="pool.spin")
def spin(seconds: float) -> dict[str, float]:
    """Burn CPU for ``seconds`` (wall clock); report this process's pid and the interval."""
    start = time.time()
    n = 0
    while time.time() - start < seconds:
        n += 1
    return {"pid": os.getpid(), "start": start, "end": time.time()}


@app.task(name="pool.stuck", timeout=1.0, retry=RetryPolicy.none())
def stuck(pid_file: str) -> str:
    """Write this child's pid, then block far past the timeout."""
    return _park(pid_file, 3600)


@app.task(name="pool.exit", retry=RetryPolicy.none())
def hard_exit(code: int) -> str:
    """Leave the child without answering, as a segfault or os._exit would."""
    os._exit(code)


@app.task(name="pool.fails", retry=RetryPolicy.none())
def fails(message: str) -> str:
    """Raise, so the error crosses the pipe."""
    raise ValueError(message)


@app.task(name="pool.whoami")
def whoami(ctx: Context, tag: str) -> dict[str, object]:
    """The context fields a child sees."""
    return {"task_id": ctx.task_id, "attempt": ctx.attempt, "worker_id": ctx.worker_id, "tag": tag}


@app.task(name="pool.opted_in", pool="process")
def opted_in() -> int:
    """Runs in a child even on a thread-pool worker."""
    return os.getpid()


@app.task(name="pool.in_thread")
def in_thread() -> int:
    """Runs in the worker's own process on a thread-pool worker."""
    return os.getpid()


@app.task(name="pool.wait", timeout=60.0, retry=RetryPolicy.none())
def wait(pid_file: str) -> str:
    """Write this child's pid, then wait long enough to be killed from outside."""
    return _park(pid_file, 60)


def _park(pid_file: str, seconds: float) -> str:
    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(seconds)
    return "not killed"


@app.task(name="pool.progress", retry=RetryPolicy.none())
def report_progress(ctx: Context) -> str:
    """Try to report progress from a child; return what it said."""
    try:
        ctx.progress_sync(0.5, note="from a child")
    except RuntimeError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "reported"
