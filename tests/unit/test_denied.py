"""Permission violations reported by the server become PermissionDenied at the call site."""

from __future__ import annotations

import asyncio
import types

import pytest

from ebind._denied import (
    Denials,
    Violation,
    attach_denials,
    covers,
    denial,
    denials_for,
    describe,
    guarded,
    parse_violation,
)
from ebind.errors import EbindError, PermissionDenied

PURGE = "$JS.API.STREAM.PURGE.EBIND_DLQ"
# nats-py hands the error on lowercased, with its own prefix
PURGE_ERR = 'nats: permissions violation for publish to "$js.api.stream.purge.ebind_dlq"'


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (PURGE_ERR, Violation("publish", "$js.api.stream.purge.ebind_dlq")),
        (
            'nats: Permissions Violation for Subscription to "_INBOX.>"',
            Violation("subscription", "_inbox.>"),
        ),
        ("nats: stale connection", None),
        ("nats: authorization violation", None),
        ("", None),
    ],
)
def test_parse_violation(text: str, want: Violation | None) -> None:
    assert parse_violation(Exception(text)) == want


@pytest.mark.parametrize(
    ("prefix", "subject", "want"),
    [
        (PURGE, PURGE.lower(), True),
        ("$JS.API.CONSUMER.CREATE.S.c", "$js.api.consumer.create.s.c.tasks.>", True),
        ("$JS.API.CONSUMER.CREATE.S.c", "$js.api.consumer.create.s.c2", False),
        ("$JS.API.STREAM.INFO.EBIND_TASKS", "$js.api.stream.info.ebind_tasks_x", False),
        ("A.B", "a", False),
    ],
)
def test_covers_matches_whole_tokens_in_any_case(prefix: str, subject: str, want: bool) -> None:
    assert covers(prefix, subject) is want


async def test_a_covered_violation_fails_the_request_at_once_and_cancels_it() -> None:
    denials = Denials()
    never: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    guard = asyncio.create_task(denials.guard(PURGE, never, "purge stream EBIND_DLQ"))
    await asyncio.sleep(0)
    assert denials.notice(Exception(PURGE_ERR)) == Violation("publish", PURGE.lower(), handled=True)
    with pytest.raises(PermissionDenied) as caught:
        await guard
    err = caught.value
    assert isinstance(err, EbindError)
    assert err.subject == PURGE and err.action == "purge stream EBIND_DLQ"
    assert str(err) == (
        "permission denied: this NATS user may not purge stream EBIND_DLQ (the server "
        f"refused a publish to {PURGE!r}); grant it in the user's NATS permissions or use a "
        "user that has it"
    )
    assert never.cancelled()
    assert denials._waiting == []


async def test_other_violations_and_errors_leave_the_request_alone() -> None:
    denials = Denials()
    reply: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    guard = asyncio.create_task(denials.guard(PURGE, reply, "purge"))
    await asyncio.sleep(0)
    other = 'nats: permissions violation for publish to "$js.api.stream.purge.ebind_tasks"'
    assert denials.notice(Exception(other)) == Violation(
        "publish", "$js.api.stream.purge.ebind_tasks", handled=False
    )
    assert denials.notice(Exception("nats: slow consumer")) is None
    reply.set_result("purged")
    assert await guard == "purged"


async def test_the_request_s_own_error_passes_through() -> None:
    async def fails() -> None:
        raise TimeoutError("no reply")

    with pytest.raises(TimeoutError, match="no reply"):
        await Denials().guard(PURGE, fails(), "purge")


async def test_cancelling_the_caller_cancels_the_request() -> None:
    denials = Denials()
    never: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    guard = asyncio.create_task(denials.guard(PURGE, never, "purge"))
    await asyncio.sleep(0)
    guard.cancel()
    with pytest.raises(asyncio.CancelledError):
        await guard
    await asyncio.sleep(0)
    assert never.cancelled()
    assert denials._waiting == []


async def test_one_violation_fails_every_request_it_covers() -> None:
    denials = Denials()
    loop = asyncio.get_running_loop()
    guards = [
        asyncio.create_task(denials.guard(PURGE, loop.create_future(), "purge")),
        asyncio.create_task(
            denials.guard(("$JS.API.X", PURGE), loop.create_future(), "purge or x")
        ),
    ]
    await asyncio.sleep(0)
    denials.notice(Exception(PURGE_ERR))
    for guard in guards:
        with pytest.raises(PermissionDenied):
            await guard


async def test_connections_carry_their_registry() -> None:
    nc = types.SimpleNamespace()
    assert isinstance(denials_for(nc), Denials)
    mine = Denials()
    attach_denials(nc, mine)
    assert denials_for(nc) is mine
    js = types.SimpleNamespace(_nc=nc)
    never: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    guard = asyncio.create_task(guarded(js, PURGE, never, "purge"))
    await asyncio.sleep(0)
    mine.notice(Exception(PURGE_ERR))
    with pytest.raises(PermissionDenied):
        await guard
    attach_denials(object(), mine)  # a type without attributes: nothing to share, no error


@pytest.mark.parametrize(
    ("subject", "want"),
    [
        ("$JS.API.STREAM.PURGE.EBIND_DLQ", "purge stream EBIND_DLQ"),
        ("$JS.API.STREAM.DELETE.EBIND_TASKS", "delete stream EBIND_TASKS"),
        ("$JS.API.STREAM.CREATE.EBIND_TASKS", "create stream EBIND_TASKS"),
        ("$JS.API.STREAM.UPDATE.EBIND_RESP", "update stream EBIND_RESP"),
        ("$JS.API.STREAM.INFO.KV_ebind-dags", "read the info of stream KV_ebind-dags"),
        ("$JS.API.STREAM.MSG.GET.EBIND_TASKS", "read messages of stream EBIND_TASKS"),
        ("$JS.API.DIRECT.GET.EBIND_RESP.RESP.c.t", "read from stream EBIND_RESP"),
        (
            "$JS.API.CONSUMER.MSG.NEXT.EBIND_TASKS.ebind-worker",
            "pull from consumer EBIND_TASKS.ebind-worker",
        ),
        (
            "$JS.API.CONSUMER.CREATE.EBIND_TASKS.ebind-worker.TASKS.>",
            "manage consumers of stream EBIND_TASKS",
        ),
        (
            "$JS.API.CONSUMER.DURABLE.CREATE.EBIND_DAG_EVENTS.ebind-scheduler",
            "manage consumers of stream EBIND_DAG_EVENTS",
        ),
        ("$JS.API.CONSUMER.LIST", "manage consumers of stream ?"),
        ("$JS.ACK.EBIND_TASKS.w.1.1.1.1.0", "acknowledge messages of stream EBIND_TASKS"),
        ("$KV.ebind-leases.scheduler", "write to KV bucket ebind-leases"),
        ("TASKS_SCHEDULED.t1", "publish delayed tasks (countdown / eta)"),
        ("TASKS_SCHEDULES.nightly", "publish periodic schedules"),
        ("TASKS.billing.charge", "publish tasks"),
        ("TASKS_TARGET.Z3B1.add", "publish targeted tasks"),
        ("RESP.c.t", "publish task responses"),
        ("DLQ.add", "publish dead letters"),
        ("DAG.d.completed.s", "publish DAG events"),
        ("other.subject", "publish to other.subject"),
        ("$js.api.stream.purge.ebind_dlq", "purge stream ebind_dlq"),
    ],
)
def test_describe_says_what_a_refused_publish_was_for(subject: str, want: str) -> None:
    assert describe(subject) == want
    assert denial(subject).action == want
    assert denial(subject, "do x").action == "do x"


async def test_listeners_fail_their_own_requests_and_report_it() -> None:
    denials = Denials()
    seen: list[Violation] = []

    def listener(violation: Violation) -> bool:
        seen.append(violation)
        return violation.subject.startswith("$kv.")

    denials.listen(listener)
    lease = 'nats: permissions violation for publish to "$kv.ebind-leases.scheduler"'
    assert denials.notice(Exception(lease)) == Violation(
        "publish", "$kv.ebind-leases.scheduler", handled=True
    )
    assert denials.notice(Exception(PURGE_ERR)) == Violation(
        "publish", PURGE.lower(), handled=False
    )
    assert [v.subject for v in seen] == ["$kv.ebind-leases.scheduler", PURGE.lower()]
