"""A worker's revocation set: what a revocation write does to known and running tasks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from ebind.context import Context
from ebind.worker.revoked import Revocations


@dataclass
class _Msg:
    subject: str


async def test_a_write_adds_the_id_and_a_message_stored_later_needs_no_read() -> None:
    revocations = Revocations(nc=None)
    await revocations._on_revoked(_Msg("$KV.ebind-leases.revoked.t1"))
    assert revocations.ids == {"t1"}
    assert await revocations.is_revoked("t1", None) is True
    revocations._since_ns = 5  # as load() leaves it: messages stored later need no read
    assert await revocations.is_revoked("t2", 10) is False


async def test_surely_clear_agrees_with_is_revoked_where_it_answers() -> None:
    revocations = Revocations(nc=None)
    await revocations._on_revoked(_Msg("$KV.ebind-leases.revoked.t1"))
    revocations._since_ns = 5
    # Stored after the worker began listening: answered locally, as is_revoked answers.
    assert revocations.surely_clear("t2", 10) is True
    assert await revocations.is_revoked("t2", 10) is False
    # A revoked id, an older message or an unknown store time: the bucket decides.
    assert revocations.surely_clear("t1", 10) is False
    assert revocations.surely_clear("t2", 4) is False
    assert revocations.surely_clear("t2", None) is False


async def test_a_write_for_another_subject_is_ignored() -> None:
    revocations = Revocations(nc=None)
    await revocations._on_revoked(_Msg("$KV.ebind-leases.revoked.a.b"))
    assert revocations.ids == frozenset()


async def test_a_running_async_task_is_flagged_and_cancelled() -> None:
    revocations = Revocations(nc=None)
    ctx = Context(task_id="t3", name="n")
    task: asyncio.Task[Any] = asyncio.create_task(asyncio.sleep(30))
    revocations.running("t3", ctx, task)
    await revocations._on_revoked(_Msg("$KV.ebind-leases.revoked.t3"))
    assert ctx.revoked is True
    await asyncio.sleep(0)
    assert task.cancelled()


async def test_a_running_sync_task_is_only_flagged_and_a_finished_one_untouched() -> None:
    revocations = Revocations(nc=None)
    ctx = Context(task_id="t4", name="n")
    revocations.running("t4", ctx, None)
    await revocations._on_revoked(_Msg("$KV.ebind-leases.revoked.t4"))
    assert ctx.revoked is True
    done = Context(task_id="t5", name="n")
    revocations.running("t5", done, None)
    revocations.finished("t5")
    await revocations._on_revoked(_Msg("$KV.ebind-leases.revoked.t5"))
    assert done.revoked is False


async def test_a_dag_step_id_is_never_revoked_and_needs_no_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[object] = []
    monkeypatch.setattr("ebind._jsreq.requests_for", reads.append)
    revocations = Revocations(nc=None)
    assert await revocations.is_revoked("order-7:charge", None) is False
    assert reads == []  # not looked up (and so no failed-check warning per step)
