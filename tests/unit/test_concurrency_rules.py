"""The pure rules of concurrency keys: options, the key of a call, slot records and choices."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest

from ebind.errors import InvalidArguments
from ebind.limits.concurrency_rules import (
    MAX_DEFER,
    MAX_KEY_LEN,
    MAX_LIMIT,
    CancelNotice,
    Concurrency,
    ConcurrencyStrategy,
    SlotLease,
    SlotView,
    call_key,
    cancel_key,
    cancelled_task_id,
    check_key,
    decode_lease,
    decode_notice,
    defer_delay,
    free_slot,
    key_group,
    lease_ttl_header,
    may_hold,
    renew_interval,
    slot_key,
    slot_row,
    superseded_error,
    task_limit,
    victim,
)
from ebind.validate import envelope_problem
from ebind.wire import ErrorKind, TaskEnvelope

NOW = 1_000_000.0
Q, RR, CIP = (
    ConcurrencyStrategy.QUEUE,
    ConcurrencyStrategy.ROUND_ROBIN,
    ConcurrencyStrategy.CANCEL_IN_PROGRESS,
)


def lease(task_id: str = "t1", *, started: float = NOW - 5, expires: float = NOW + 10) -> SlotLease:
    return SlotLease(
        task_id=task_id,
        task_name="app.work",
        key="k",
        worker_id="w1",
        started_at=started,
        expires_at=expires,
    )


def encoded(**fields: Any) -> bytes:
    base = msgspec.structs.asdict(lease())
    base.update(fields)
    return msgspec.json.encode(base)


# ---------------------------------------------------------------- options
def test_defaults_and_string_strategy_normalised() -> None:
    limit = Concurrency(limit=3, strategy="round_robin")
    assert limit.strategy is RR and limit.mode is RR
    assert Concurrency(limit=1).mode is Q
    assert Concurrency(limit=1).lease_ttl == 30.0


@pytest.mark.parametrize("bad", [0, -1, MAX_LIMIT + 1, True, 1.5, "2", None])
def test_the_limit_must_be_a_sane_int(bad: Any) -> None:
    with pytest.raises(InvalidArguments, match="concurrency limit"):
        Concurrency(limit=bad)


def test_an_unknown_strategy_names_the_choices() -> None:
    with pytest.raises(InvalidArguments, match="queue, round_robin, cancel_in_progress"):
        Concurrency(limit=1, strategy="fifo")


@pytest.mark.parametrize(
    ("field", "value"),
    [("lease_ttl", 0.5), ("lease_ttl", math.inf), ("lease_ttl", math.nan), ("hold", -1.0)],
)
def test_times_are_checked(field: str, value: float) -> None:
    with pytest.raises(InvalidArguments, match=field):
        Concurrency(limit=1, **{field: value})


@pytest.mark.parametrize("bad", ["", 3, b"k"])
def test_the_key_is_a_name_or_a_function(bad: Any) -> None:
    with pytest.raises(InvalidArguments, match="argument name or a function"):
        Concurrency(limit=1, key=bad)


def test_task_limit_builds_from_the_decorator_options() -> None:
    assert task_limit(None, None, ["a"]) is None
    limit = task_limit(2, "a", ["a", "b"])
    assert limit == Concurrency(limit=2, key="a")
    given = Concurrency(limit=1, key="b")
    assert task_limit(given, None, ["a", "b"]) is given


def test_task_limit_rejects_mistakes_at_registration() -> None:
    with pytest.raises(InvalidArguments, match="needs concurrency="):
        task_limit(None, "a", ["a"])
    with pytest.raises(InvalidArguments, match="not both"):
        task_limit(Concurrency(limit=1), "a", ["a"])
    with pytest.raises(InvalidArguments, match=r"'c' is not a parameter .*a, b"):
        task_limit(1, "c", ["a", "b"])


# ---------------------------------------------------------------- the key of a call
def test_call_key_from_a_named_argument_positional_keyword_or_default() -> None:
    limit = Concurrency(limit=1, key="customer")
    names = ["order", "customer"]
    assert call_key(limit, names, {}, ["o1", "c1"], {}) == "c1"
    assert call_key(limit, names, {}, ["o1"], {"customer": "c2"}) == "c2"
    assert call_key(limit, names, {"customer": "anon"}, ["o1"], {}) == "anon"
    assert call_key(limit, names, {}, ["o1", 42], {}) == "42"


def test_call_key_without_a_key_is_task_wide() -> None:
    assert call_key(Concurrency(limit=1), ["a"], {}, [1], {}) == ""


def test_call_key_from_a_function_of_the_arguments() -> None:
    limit = Concurrency(limit=1, key=lambda customer, **_: f"c-{customer['id']}")
    assert call_key(limit, ["order", "customer"], {}, ["o", {"id": 7}], {}) == "c-7"


def test_call_key_problems_are_invalid_arguments() -> None:
    with pytest.raises(InvalidArguments, match="was not given"):
        call_key(Concurrency(limit=1, key="b"), ["a", "b"], {}, [1], {})
    with pytest.raises(InvalidArguments, match="raised ZeroDivisionError"):
        call_key(Concurrency(limit=1, key=lambda a: 1 / 0), ["a"], {}, [1], {})
    with pytest.raises(InvalidArguments, match="str or an int"):
        call_key(Concurrency(limit=1, key=lambda a: None), ["a"], {}, [1], {})


@pytest.mark.parametrize("bad", ["", "x" * (MAX_KEY_LEN + 1), None, True, 1.5, ["k"]])
def test_check_key_rejects(bad: Any) -> None:
    with pytest.raises(InvalidArguments):
        check_key(bad)


def test_check_key_accepts_any_text_up_to_the_limit() -> None:
    assert check_key("tenant.* >/é") == "tenant.* >/é"
    assert check_key("x" * MAX_KEY_LEN) == "x" * MAX_KEY_LEN


# ---------------------------------------------------------------- names in the bucket
def test_key_group_is_a_safe_token_per_task_and_key() -> None:
    group = key_group("app.work", "tenant.* >")
    assert len(group) == 32 and group.isalnum()
    assert group == key_group("app.work", "tenant.* >")
    assert group != key_group("app.other", "tenant.* >")
    assert key_group("a", "b\0c") != key_group("a\0b", "c")
    assert slot_key(group, 3) == f"conc.{group}.3"


def test_cancel_keys_round_trip_and_reject_others() -> None:
    assert cancelled_task_id(cancel_key("t-1")) == "t-1"
    assert cancelled_task_id("superseded.") is None
    assert cancelled_task_id("superseded.a.b") is None
    assert cancelled_task_id("revoked.t-1") is None


def test_ttl_header_and_renewal() -> None:
    assert lease_ttl_header(2.5) == "2500ms"
    assert lease_ttl_header(0.1) == "1000ms"
    assert renew_interval(30.0) == 10.0


# ---------------------------------------------------------------- records read back
def test_a_valid_lease_decodes() -> None:
    assert decode_lease(encoded(), "app.work", "k", 30.0, NOW) == lease()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b'{"task_id": "t"}',
        encoded(task_name="app.other"),
        encoded(key="other"),
        encoded(expires_at=NOW + 3600),  # far longer than any lease this task writes
        encoded(started_at=NOW + 3600),
        encoded(task_id=""),
        encoded(task_id="x" * 300),
        encoded(worker_id="w" * 300),
        encoded(started_at="yesterday"),
    ],
)
def test_bad_records_count_as_free(data: bytes) -> None:
    assert decode_lease(data, "app.work", "k", 30.0, NOW) is None


def test_non_finite_times_count_as_free() -> None:
    data = encoded().replace(str(NOW + 10).encode(), b"1e999")
    assert decode_lease(data, "app.work", "k", 30.0, NOW) is None


def test_notices_decode_and_reject() -> None:
    notice = CancelNotice(task_id="t1", by="t2", key="k")
    assert decode_notice(msgspec.json.encode(notice)) == notice
    assert decode_notice(b"junk") is None
    assert decode_notice(msgspec.json.encode({"task_id": "t1", "by": "x" * 300, "key": ""})) is None


# ---------------------------------------------------------------- choices
def test_free_slot_takes_empty_unreadable_or_lapsed() -> None:
    held = SlotView(0, 5, lease())
    assert free_slot([held], NOW) is None
    empty = SlotView(1, 0, None)
    assert free_slot([held, empty], NOW) is empty
    lapsed = SlotView(2, 9, lease(expires=NOW - 10))
    assert free_slot([held, lapsed], NOW) is lapsed
    # a lease just past its expiry may be a clock difference: still respected
    assert free_slot([SlotView(3, 9, lease(expires=NOW - 1))], NOW) is None


def test_victim_is_the_oldest_not_yet_asked() -> None:
    old, young = lease("old", started=NOW - 50), lease("young", started=NOW - 1)
    views = [SlotView(0, 1, young), SlotView(1, 2, old), SlotView(2, 0, None)]
    assert victim(views, frozenset()) == old
    assert victim(views, frozenset({"old"})) == young
    assert victim(views, frozenset({"old", "young"})) is None
    assert victim([], frozenset()) is None


def test_ties_in_age_break_by_id() -> None:
    a, b = lease("a", started=NOW), lease("b", started=NOW)
    assert victim([SlotView(0, 1, b), SlotView(1, 1, a)], frozenset()) == a


@pytest.mark.parametrize(
    ("strategy", "capacity", "key_holding", "total", "expected"),
    [
        (Q, 16, 0, 0, True),
        (Q, 16, 3, 3, True),
        (Q, 16, 4, 4, False),  # a quarter of the capacity per key
        (Q, 16, 0, 8, False),  # half of it in all
        (Q, 2, 0, 0, True),
        (Q, 2, 1, 1, False),
        (Q, 1, 0, 0, False),  # one slot: holding would block every other key
        (CIP, 16, 0, 0, True),
        (RR, 16, 0, 0, False),
    ],
)
def test_may_hold(
    strategy: ConcurrencyStrategy, capacity: int, key_holding: int, total: int, expected: bool
) -> None:
    assert may_hold(strategy, capacity, key_holding, total) is expected


def test_defer_delay_grows_with_the_wait_and_is_bounded() -> None:
    assert defer_delay(0.0, 0.0) == 0.5
    assert defer_delay(20.0, 0.0) == 5.0
    assert defer_delay(1e9, 0.0) == MAX_DEFER
    assert defer_delay(20.0, 0.999) == pytest.approx(7.5, abs=0.01)
    assert defer_delay(math.nan, 0.0) == 0.5
    assert defer_delay(-5.0, 7.0) == 0.75  # jitter clamped


def test_superseded_error_names_both_tasks_and_the_key() -> None:
    error = superseded_error("t1", "t2", "doc-9")
    assert error.kind == ErrorKind.SUPERSEDED.value == "superseded"
    assert not error.retryable
    assert "t1" in error.message and "t2" in error.message and "'doc-9'" in error.message
    assert "key (" in superseded_error("t1", "t2", "").message


def test_an_envelope_with_an_overlong_key_is_invalid() -> None:
    env = TaskEnvelope(id="t1", name="app.work", concurrency_key="x" * (MAX_KEY_LEN + 1))
    assert "concurrency_key" in (envelope_problem(env, "TASKS.app.work") or "")
    ok = TaskEnvelope(id="t1", name="app.work", concurrency_key="x" * MAX_KEY_LEN)
    assert envelope_problem(ok, "TASKS.app.work") is None


def test_slot_row_checks_the_record_against_its_key() -> None:
    group = key_group("app.work", "k")
    row = slot_row(slot_key(group, 2), encoded(), NOW)
    assert row is not None and row.valid and row.slot == 2
    assert row.task_id == "t1" and row.running_for == 5 and row.expires_in == 10
    forged = slot_row(slot_key(key_group("app.work", "other"), 0), encoded(), NOW)
    assert forged is not None and not forged.valid
    junk = slot_row(slot_key(group, 0), b"junk", NOW)
    assert junk is not None and not junk.valid
    for not_a_slot in ("revoked.t1", "conc.a", "conc.a.b.c", "conc.a.x", "lease.a.1"):
        assert slot_row(not_a_slot, encoded(), NOW) is None
