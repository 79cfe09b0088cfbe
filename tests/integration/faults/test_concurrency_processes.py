"""Concurrency keys across ``ebind worker`` processes: the limit holds, and a SIGKILLed
holder's slot lapses after its lease TTL so the waiting task runs."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from conc_app import LEASE_TTL
from test_stale import Procs, fleet

from ebind.app import App

pytestmark = pytest.mark.timeout(90)

LIMITS = {"cc.one": 1, "cc.two": 2}


@pytest.fixture
def procs(nats_url: str, tmp_path: Path) -> Iterator[Procs]:
    """Worker processes serving ``conc_app``."""
    yield from fleet(nats_url, tmp_path, "conc_app:app")


@pytest.fixture
async def producer(nats_url: str) -> AsyncIterator[App]:
    """A connected App that knows ``conc_app``'s tasks."""
    from conc_app import app as conc_app

    async with App("conc-producer", nats_url=nats_url) as app:
        app.registry = conc_app.registry
        yield app


def most_at_once(runs: list[dict[str, Any]], key: str) -> int:
    """The most runs of ``key`` between their start and end lines at one moment."""
    # an end and a start at the same instant: the end (-1) sorts first
    edges = sorted((r["t"], 1 if r["event"] == "start" else -1) for r in runs if r["key"] == key)
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


async def test_limits_of_one_and_two_hold_across_worker_processes(
    procs: Procs, producer: App
) -> None:
    for wid in ("w1", "w2", "w3"):
        procs.start(wid)
    calls = [(name, key) for name, limit in LIMITS.items() for key in ("a", "b") * limit * 3]
    futs = [await producer.enqueue(name, key, 150) for name, key in calls]
    results = await asyncio.gather(*(f.result(40) for f in futs))
    assert results == [key for _, key in calls]
    runs = procs.runs()
    for name, limit in LIMITS.items():
        mine = [r for r in runs if r["name"] == name]
        for key in ("a", "b"):
            assert most_at_once(mine, key) == limit, mine
    # more than one process ran them, and none was lost or dead-lettered
    assert len({r["pid"] for r in runs}) > 1
    assert sum(1 for r in runs if r["event"] == "end") == len(futs)


async def test_a_sigkilled_holder_frees_its_slot_after_the_lease_ttl(
    procs: Procs, producer: App
) -> None:
    first = procs.start("holder")
    long = await producer.enqueue("cc.one", "k", 30_000)
    await _until(lambda: any(r["event"] == "start" for r in procs.runs()), 15)
    procs.start("waiter")
    waiting = await producer.enqueue("cc.one", "k", 50)
    await asyncio.sleep(0.5)
    assert [r["task_id"] for r in procs.runs() if r["event"] == "start"] == [long.id]
    killed_at = time.time()
    os.kill(first.pid, signal.SIGKILL)
    assert await waiting.result(20) == "k"
    started = next(r for r in procs.runs() if r["task_id"] == waiting.id)
    # it ran only once the dead holder's lease had lapsed
    assert started["t"] >= killed_at + LEASE_TTL / 2  # renewed every third of the TTL
    assert procs.events("waiter", "task.concurrency_wait")
    # the killed run ended at the kill; after it, at most one per key ran at any moment
    runs = procs.runs()
    cut = {"event": "end", "task_id": long.id, "key": "k", "pid": first.pid, "t": killed_at}
    assert most_at_once([*runs, cut], "k") == 1
    assert runs[0]["task_id"] == long.id and runs[0]["pid"] == first.pid


async def _until(cond: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.05)
