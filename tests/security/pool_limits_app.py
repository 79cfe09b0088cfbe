"""App for the process-pool limit tests (children import it as ``pool_limits_app:app``)."""

from __future__ import annotations

import os
import time

from ebind.app import App
from ebind.context import Context
from ebind.retry import RetryPolicy

app = App("limpool")


@app.task(name="lim.pool_revocable", retry=RetryPolicy.none())
def revocable(ctx: Context, pid_file: str, seconds: float) -> str:
    """Work in small steps, looking at ctx.check_revoked() between them, as docs/tasks.md asks."""
    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ctx.check_revoked()
        time.sleep(0.05)
    return "ran to its end"


@app.task(name="lim.pool_hard", timeout=1.0, retry=RetryPolicy.none())
def hard(seconds: float) -> str:
    """The operator's hard limit: killed in its child after 1 s."""
    time.sleep(seconds)
    return "ran to its end"
