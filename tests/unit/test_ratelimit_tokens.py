"""The pure rate-limit math: rate strings, keys, the shared record, leases and local blocks."""

from __future__ import annotations

import math
import random

import msgspec
import pytest

from ebind.errors import InvalidArguments
from ebind.ratelimit import (
    HOLDER_TTL,
    MAX_BLOCK,
    MAX_HOLDERS,
    MAX_RATE_KEY,
    KeyParts,
    Lease,
    Rate,
    RateRecord,
    TokenBlock,
    active_holders,
    block_size,
    check_rate_key,
    decode_record,
    encode_record,
    fresh_record,
    key_argument,
    lease,
    next_want,
    parse_rate,
    record_key,
    split_record_key,
)

NOW = 1_700_000_000.0


# ---------------------------------------------------------------- rate strings
@pytest.mark.parametrize(
    ("text", "per_second", "shown"),
    [
        ("100/s", 100.0, "100/s"),
        ("30/m", 0.5, "30/m"),
        ("2/h", 2 / 3600, "2/h"),
        ("2.5/s", 2.5, "2.5/s"),
        (" 10 / s ", 10.0, "10/s"),
        ("1000000/s", 1_000_000.0, "1000000/s"),
    ],
)
def test_rates_parse_to_tokens_per_second(text: str, per_second: float, shown: str) -> None:
    rate = parse_rate(text)
    assert math.isclose(rate.per_second, per_second)
    assert math.isclose(rate.interval, 1 / per_second)
    assert rate.text == shown


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("100", "is not '<number>/<unit>'"),
        ("100/d", "is not '<number>/<unit>'"),
        ("/s", "is not '<number>/<unit>'"),
        ("-1/s", "is not '<number>/<unit>'"),
        ("1e3/s", "is not '<number>/<unit>'"),
        ("", "is not '<number>/<unit>'"),
        ("0/s", "allows nothing"),
        ("0.0/m", "allows nothing"),
        ("1000001/s", "above"),
        (100, "must be a string"),
        (None, "must be a string"),
    ],
)
def test_bad_rates_are_refused_naming_the_problem(bad: object, says: str) -> None:
    with pytest.raises(InvalidArguments, match=says) as info:
        parse_rate(bad)
    assert info.value.parameter == "rate_limit"


# ---------------------------------------------------------------- keys
@pytest.mark.parametrize("key", ["acme", "customer 42 / é", "a.b.c", "*", ">", 7])
def test_a_key_round_trips_through_its_kv_key(key: str | int) -> None:
    kv_key = record_key("billing.charge", check_rate_key(key))
    assert all(c.isalnum() or c in "-_." for c in kv_key)
    assert kv_key.count(".") == 1
    assert split_record_key(kv_key) == KeyParts("billing.charge", str(key))


def test_the_task_wide_limit_has_a_key_of_its_own() -> None:
    assert split_record_key(record_key("a.b", "")) == KeyParts("a.b", "")
    assert record_key("a.b", "") != record_key("a", "b")


@pytest.mark.parametrize("foreign", ["a.b.c", "!!!", "", "YQ.", "_w"])
def test_keys_ebind_did_not_write_are_not_read_as_limits(foreign: str) -> None:
    assert split_record_key(foreign) is None


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("", "must not be empty"),
        ("x" * (MAX_RATE_KEY + 1), "bytes; the limit is"),
        ("é" * (MAX_RATE_KEY // 2 + 1), "bytes; the limit is"),
        (1.5, "string or an integer"),
        (True, "string or an integer"),
        (None, "string or an integer"),
        (["a"], "string or an integer"),
    ],
)
def test_bad_rate_keys_are_refused(bad: object, says: str) -> None:
    with pytest.raises(InvalidArguments, match=says):
        check_rate_key(bad)


def test_the_key_argument_is_read_by_position_keyword_or_default() -> None:
    assert key_argument("customer", 1, None, ("x", "acme"), {}) == "acme"
    assert key_argument("customer", 1, None, ("x",), {"customer": 42}) == "42"
    assert key_argument("customer", 1, "anon", ("x",), {}) == "anon"
    with pytest.raises(InvalidArguments, match="argument 'customer' is the task's rate key"):
        key_argument("customer", 0, None, (None,), {})


# ---------------------------------------------------------------- the record
def test_a_record_round_trips() -> None:
    rec = RateRecord(tat=NOW + 0.5, per_second=50.0, holders={"w1": NOW})
    assert decode_record(encode_record(rec), NOW, 2.0) == rec


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "not a rate record"),
        (b"\xff\xfe", "not a rate record"),
        (b"[]", "not a rate record"),
        (b'{"per_second": 1}', "not a rate record"),
        (b'{"tat": "soon", "per_second": 1}', "not a rate record"),
        (b'{"tat": -1, "per_second": 1}', "is not a time"),
        (b'{"tat": 1e999, "per_second": 1}', "not a rate record"),
        (b'{"tat": 9e15, "per_second": 1}', "ahead"),
        (b'{"tat": 1, "per_second": 0}', "out of range"),
        (b'{"tat": 1, "per_second": -5}', "out of range"),
        (b'{"tat": 1, "per_second": 1e12}', "out of range"),
        (b'{"tat": 1, "per_second": 1, "holders": {"w": "x"}}', "not a rate record"),
        (b'{"tat": 1, "per_second": 1, "holders": {"w": 1e999}}', "not a rate record"),
    ],
)
def test_untrusted_record_bytes_are_refused_with_a_reason(data: bytes, says: str) -> None:
    got = decode_record(data, NOW, 2.0)
    assert isinstance(got, str)
    assert says in got


def test_a_record_with_too_many_holders_or_a_huge_holder_name_is_refused() -> None:
    many = {f"w{i}": NOW for i in range(MAX_HOLDERS + 1)}
    data = encode_record(RateRecord(tat=NOW, per_second=1.0, holders=many))
    assert "holders" in str(decode_record(data, NOW, 2.0))
    long = encode_record(RateRecord(tat=NOW, per_second=1.0, holders={"w" * 201: NOW}))
    assert "malformed" in str(decode_record(long, NOW, 2.0))


def test_a_record_in_the_past_is_valid_and_leases_from_now() -> None:
    old = RateRecord(tat=NOW - 3600, per_second=5.0)
    assert decode_record(encode_record(old), NOW, 2.0) == old
    got = lease(old, now=NOW, rate=parse_rate("5/s"), demand=1, holder="w", hold_limit=2.0)
    assert not isinstance(got, float)
    assert got[1].start == NOW


# ---------------------------------------------------------------- holders and block sizes
def test_holders_that_stopped_leasing_drop_out() -> None:
    rec = RateRecord(
        tat=NOW, per_second=1.0, holders={"old": NOW - HOLDER_TTL - 1, "live": NOW - 0.5}
    )
    assert active_holders(rec, NOW, "me") == {"live": NOW - 0.5, "me": NOW}
    assert active_holders(None, NOW, "me") == {"me": NOW}


def test_holders_are_capped_keeping_the_most_recent() -> None:
    rec = RateRecord(
        tat=NOW, per_second=1.0, holders={f"w{i}": NOW - i / 1000 for i in range(MAX_HOLDERS)}
    )
    kept = active_holders(rec, NOW, "me")
    assert len(kept) == MAX_HOLDERS
    assert "me" in kept
    assert f"w{MAX_HOLDERS - 1}" not in kept


@pytest.mark.parametrize(
    ("per_second", "holders", "demand", "size"),
    [
        (50.0, 3, 16, 3),  # a third of 0.2 s of tokens each
        (50.0, 1, 16, 10),
        (50.0, 1, 2, 2),  # no more than this worker has waiting
        (1.0, 1, 16, 1),  # a slow limit leases one token at a time
        (1 / 3600, 5, 16, 1),
        (1e6, 1, 10_000, MAX_BLOCK),
        (1e6, 4, 10_000, MAX_BLOCK),
        (100.0, 3, 0, 1),
    ],
)
def test_block_size_is_the_worker_share_capped_by_demand(
    per_second: float, holders: int, demand: int, size: int
) -> None:
    assert block_size(per_second, holders, demand) == size


# ---------------------------------------------------------------- leases
def test_a_first_lease_starts_now_and_books_the_block() -> None:
    rate = parse_rate("50/s")
    got = lease(None, now=NOW, rate=rate, demand=16, holder="w1", hold_limit=2.0)
    assert not isinstance(got, float)
    rec, leased = got
    assert leased == Lease(NOW, 10, 0.02)
    assert math.isclose(rec.tat, NOW + 0.2)
    assert rec.holders == {"w1": NOW}
    assert rec.per_second == 50.0


def test_a_lease_starts_where_the_last_one_ended() -> None:
    rate = parse_rate("10/s")
    rec = RateRecord(tat=NOW + 1.0, per_second=10.0, holders={"w2": NOW})
    got = lease(rec, now=NOW, rate=rate, demand=4, holder="w1", hold_limit=2.0)
    assert not isinstance(got, float)
    new, leased = got
    assert leased.start == NOW + 1.0
    assert leased.count == 1  # 10/s * 0.2 s shared by two workers
    assert math.isclose(new.tat, NOW + 1.1)
    assert set(new.holders) == {"w1", "w2"}


def test_a_limit_booked_past_the_hold_limit_leases_nothing() -> None:
    rec = RateRecord(tat=NOW + 5.0, per_second=1.0)
    got = lease(rec, now=NOW, rate=parse_rate("1/s"), demand=1, holder="w", hold_limit=2.0)
    assert got == 5.0


def test_a_block_never_books_past_the_hold_limit() -> None:
    rate = parse_rate("100/s")
    rec = RateRecord(tat=NOW + 1.95, per_second=100.0)
    got = lease(rec, now=NOW, rate=rate, demand=100, holder="w", hold_limit=2.0)
    assert not isinstance(got, float)
    new, leased = got
    assert leased.count == 6  # slots at +1.95 .. +2.00
    assert new.tat <= NOW + 2.0 + rate.interval + 1e-9


# ---------------------------------------------------------------- local spending
def test_a_block_hands_out_its_slots_in_order_then_runs_dry() -> None:
    block = TokenBlock()
    assert block.take(NOW, 0.05) is None
    block.refill(Lease(NOW, 3, 0.1), NOW)
    got = [block.take(NOW, 0.05) for _ in range(3)]
    assert got == pytest.approx([NOW, NOW + 0.1, NOW + 0.2])
    assert block.take(NOW, 0.05) is None


def test_stale_slots_are_dropped_not_spent_in_a_burst() -> None:
    block = TokenBlock()
    block.refill(Lease(NOW, 10, 0.1), NOW)
    slot = block.take(NOW + 0.55, 0.05)  # slots at +0.0 .. +0.4 are past the tolerance
    assert slot is not None
    assert math.isclose(slot, NOW + 0.5)
    assert block.left == 4
    assert block.take(NOW + 100, 0.05) is None
    assert block.left == 0


def test_a_block_knows_whether_every_slot_went_to_a_task() -> None:
    block = TokenBlock()
    block.refill(Lease(NOW, 2, 0.1), NOW)
    block.take(NOW, 0.05)
    assert not block.spent_cleanly
    block.take(NOW, 0.05)
    assert block.spent_cleanly
    block.refill(Lease(NOW, 2, 0.1), NOW)
    assert block.take(NOW + 1, 0.05) is None
    assert block.dropped == 2 and not block.spent_cleanly


@pytest.mark.parametrize(
    ("want", "clean", "since", "expected"),
    [
        (1, True, 0.01, 2),
        (64, True, 0.1, 128),
        (MAX_BLOCK, True, 0.01, MAX_BLOCK),
        (600, True, 0.01, MAX_BLOCK),
        (64, True, 5.0, 1),  # the block lasted long: tasks arrive slowly
        (64, False, 0.01, 1),  # slots went stale: fewer next time
    ],
)
def test_the_next_request_grows_while_blocks_run_out_fast(
    want: int, clean: bool, since: float, expected: int
) -> None:
    assert next_want(want, clean, since) == expected


def test_lateness_counts_from_when_the_lease_arrived() -> None:
    block = TokenBlock()
    # a block of 1 ms of slots whose KV answer took 80 ms: usable for STALE after arrival
    block.refill(Lease(NOW, 100, 0.00001), NOW + 0.08)
    assert block.take(NOW + 0.08, 0.05) == NOW
    assert block.take(NOW + 0.12, 0.05) == pytest.approx(NOW + 0.00001)
    assert block.take(NOW + 0.2, 0.05) is None
    assert block.dropped == 98


# ---------------------------------------------------------------- many workers, one record
def _simulate(workers: int, per_second: float, tasks: int, seed: int) -> list[tuple[float, float]]:
    """Workers with four task slots each lease from one record (CAS races included).

    A slot (lane) waits for its token before taking the next task. Returns each task's
    ``(token, start)``: a token found up to STALE late starts at once.
    """
    rng = random.Random(seed)
    rate = Rate(per_second, 1.0, f"{per_second:g}/s")
    lanes = 4
    stored: RateRecord | None = None
    revision = 0
    cached: list[tuple[RateRecord | None, int]] = [(None, 0)] * workers
    blocks = [TokenBlock() for _ in range(workers)]
    busy_until = [NOW] * (workers * lanes)
    runs: list[tuple[float, float]] = []
    now = NOW
    while len(runs) < tasks:
        now += rng.uniform(0, rate.interval / 4)
        free = [lane for lane, until in enumerate(busy_until) if until <= now]
        if not free:
            now = min(busy_until)
            continue
        lane = rng.choice(free)
        w = lane // lanes
        slot = blocks[w].take(now, STALE)
        if slot is None:
            rec, rev = cached[w]
            if rev != revision:  # a failed CAS: read, then lease
                rec, rev = stored, revision
            got = lease(rec, now=now, rate=rate, demand=lanes, holder=f"w{w}", hold_limit=2.0)
            if isinstance(got, float):
                busy_until[lane] = now + got  # deferred: comes back when tokens are free
                continue
            new, leased = got
            stored, revision = new, revision + 1
            cached[w] = (new, revision)
            blocks[w].refill(leased, now)
            slot = blocks[w].take(now, STALE)
            assert slot is not None
        busy_until[lane] = max(slot, now)
        runs.append((slot, max(slot, now)))
    return sorted(runs)


STALE = 0.05


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("workers", "per_second"), [(3, 50.0), (1, 20.0), (8, 1000.0)])
def test_workers_sharing_a_record_never_exceed_the_rate(
    seed: int, workers: int, per_second: float
) -> None:
    runs = _simulate(workers, per_second, 300, seed)
    slots = [slot for slot, _ in runs]
    interval = 1 / per_second
    for i in range(1, len(slots)):
        # slots come from disjoint leases of one timeline: never two in one interval
        assert slots[i] - slots[i - 1] >= interval - 1e-6
    measured = (len(slots) - 1) / (slots[-1] - slots[0])
    assert per_second * 0.9 <= measured <= per_second * 1.0001
    starts = sorted(start for _, start in runs)
    window = 0.2
    for i, first in enumerate(starts):
        inside = sum(1 for t in starts[i:] if t < first + window)
        assert inside <= (window + STALE) * per_second + 1


def test_a_record_written_by_an_older_worker_with_extra_fields_still_decodes() -> None:
    data = msgspec.json.encode({"tat": NOW, "per_second": 3.0, "holders": {}, "note": "x"})
    assert decode_record(data, NOW, 2.0) == fresh_record(NOW, 3.0)
