"""App served by `ebind worker` in the front-door tests: hooks, middleware and settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ebind.app import App
from ebind.context import Context
from ebind.wire import TaskEnvelope

app = App("front")
app.config_from_object({"EBIND_WORKER_CONCURRENCY": 3, "EBIND_WORKER_SHUTDOWN_GRACE": "2s"})
LEDGER = Path(os.environ.get("FRONT_LEDGER", os.devnull))


def _note(line: str) -> None:
    with LEDGER.open("a") as f:
        f.write(line + "\n")


@app.on_worker_startup
async def opened(worker: Any) -> None:
    _note(f"startup concurrency={worker.concurrency} grace={worker.shutdown_grace:g}")


@app.on_worker_shutdown
def closed(worker: Any) -> None:
    _note("shutdown")


def tagging(next_handler: Any) -> Any:
    async def wrapped(ctx: Context, env: TaskEnvelope) -> bytes:
        _note(f"middleware {env.name}")
        return await next_handler(ctx, env)

    return wrapped


app.middleware.append(tagging)


@app.task(name="front.add")
def add(a: int, b: int) -> int:
    """Sum two numbers."""
    return a + b
