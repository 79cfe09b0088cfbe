"""App served by `ebind worker` subprocesses in the rate-limit tests."""

from __future__ import annotations

import os
import time

from ebind.app import App

LIMIT = 50.0


def register(app: App) -> None:
    """The limited task (registered on producers too, so they encode by handle)."""

    @app.task(name="rl.hit", rate_limit=f"{LIMIT:g}/s")
    async def hit(i: int) -> tuple[float, int]:
        return time.time(), os.getpid()


app = App("ratetest")
register(app)
