"""When a puller reports its consumer unavailable (a readiness input of the worker)."""

from __future__ import annotations

import asyncio
from typing import Any

from ebind.worker.pull import Budget, Puller


class _ClosedConnection:
    """A nats-py connection stand-in that was closed for good."""

    is_closed = True

    def new_inbox(self) -> str:
        return "_INBOX.test"

    async def subscribe(self, subject: str, cb: Any) -> Any:
        return None


def _puller(gone: list[str], nc: Any = None) -> Puller:
    def on_msg(msg: Any, puller: Puller) -> None:
        raise AssertionError("no message expected")

    return Puller(
        nc,
        stream="EBIND_TASKS",
        durable="ebind-worker",
        budget=Budget(4),
        on_msg=on_msg,
        expires=1.0,
        on_gone=lambda p: gone.append(p.durable),
    )


def test_repeated_no_responders_make_the_consumer_unavailable_until_a_normal_status() -> None:
    gone: list[str] = []
    p = _puller(gone)
    assert not p.unavailable
    p._on_status({"Status": "503"})
    p._on_status({"Status": "503"})
    assert not p.unavailable  # one election's worth of 503s is not an outage yet
    p._on_status({"Status": "503"})
    assert p.unavailable and gone == ["ebind-worker"]
    p._on_status({"Status": "408", "Description": "Request Timeout"})
    assert not p.unavailable


def test_a_deleted_consumer_is_reported_gone_and_unavailable_while_it_stays_deleted() -> None:
    gone: list[str] = []
    p = _puller(gone)
    p._on_status({"Status": "409", "Description": "Consumer Deleted"})
    assert gone == ["ebind-worker"]  # the worker checks and re-creates it
    for _ in range(2):
        p._on_status({"Status": "409", "Description": "Consumer Deleted"})
    assert p.unavailable


async def test_a_pull_loop_that_ended_on_a_closed_connection_is_unavailable() -> None:
    p = _puller([], _ClosedConnection())
    await p.start()
    assert p._task is not None
    await asyncio.wait_for(p._task, 5)
    assert p.unavailable
