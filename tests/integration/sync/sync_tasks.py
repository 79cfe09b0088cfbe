"""The tasks of the blocking-API tests, registered on any App (producer and worker alike)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ebind.app import App
from ebind.errors import NonRetryable
from ebind.task import Task


@dataclass(frozen=True)
class Tasks:
    """Handles of the test tasks on one App."""

    add: Task[[int, int], int]
    boom: Task[[str], int]
    nap: Task[[float], str]
    outer: Task[[int], int]


def register(app: App) -> Tasks:
    """Register the test tasks on ``app`` (same names everywhere)."""

    @app.task(name="sync.add")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="sync.boom")
    def boom(why: str) -> int:
        raise NonRetryable(why, kind="bad_input")

    @app.task(name="sync.nap")
    def nap(seconds: float) -> str:
        time.sleep(seconds)
        return "rested"

    @app.task(name="sync.outer")
    def outer(n: int) -> int:
        # A sync handler in the worker's thread pool enqueueing and awaiting another task.
        return add.sync.delay(n, n).get(timeout=10) + 1

    return Tasks(add=add, boom=boom, nap=nap, outer=outer)


def app_pair(url: str, **options: Any) -> tuple[App, Tasks, App, Tasks]:
    """A producer App and a worker App, each with the test tasks registered."""
    producer = App("sync-producer", nats_url=url, **options)
    worker = App("sync-worker", nats_url=url, **options)
    return producer, register(producer), worker, register(worker)
