"""Cluster-wide rate limits: the pure part (rate strings, the shared record, token leases).

Each limited task name (or name and key) has one record in the ``ebind-ratelimits`` bucket
holding ``tat``: the wall-clock time at which the next unleased token falls due. A worker
leases a block of ``n`` tokens with one compare-and-set on that record, moving ``tat`` on
by ``n / rate``, and spends token ``i`` of the block no earlier than ``start + i / rate``.
Tokens are time slots, so all workers together never start more than the rate allows, and
only one KV write is needed per block. Nothing here does IO.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import msgspec

from ebind.errors import InvalidArguments
from ebind.streams import b64_token, unb64_token

__all__ = [
    "HOLDER_TTL",
    "LEASE_SPAN",
    "MAX_BLOCK",
    "MAX_PER_SECOND",
    "MAX_RATE_KEY",
    "KeyParts",
    "Lease",
    "Rate",
    "RateRecord",
    "TokenBlock",
    "active_holders",
    "block_size",
    "check_rate_key",
    "decode_record",
    "encode_record",
    "fresh_record",
    "key_argument",
    "lease",
    "next_want",
    "parse_rate",
    "record_key",
    "split_record_key",
]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE_RE = re.compile(r"(\d+(?:\.\d+)?)/([smh])")
MAX_PER_SECOND = 1_000_000.0
"""Fastest limit accepted: beyond it a limit is no limit."""
MAX_RATE_KEY = 256
"""Longest rate key in UTF-8 bytes (it becomes part of a KV key)."""
LEASE_SPAN = 0.2
"""Seconds of the cluster's tokens one worker leases at once when it has the demand."""
MAX_BLOCK = 1000
"""Most tokens leased at once."""
HOLDER_TTL = 2.0
"""Seconds after its last lease a worker still counts as sharing a limit."""
MAX_HOLDERS = 256
"""Most workers a record lists; more are dropped oldest first."""
MAX_AHEAD_SLACK = 60.0
"""How far past the hold limit a record's ``tat`` may lie before it counts as corrupt."""


@dataclass(frozen=True, slots=True)
class Rate:
    """A limit: ``count`` tasks per ``period`` seconds, as written (``text``)."""

    count: float
    period: float
    text: str

    @property
    def per_second(self) -> float:
        """Tokens per second."""
        return self.count / self.period

    @property
    def interval(self) -> float:
        """Seconds between two tokens."""
        return self.period / self.count


def parse_rate(text: object) -> Rate:
    """``"100/s"``, ``"30/m"``, ``"2.5/h"`` as a Rate; InvalidArguments naming the problem."""
    if not isinstance(text, str):
        raise InvalidArguments(
            f"rate_limit must be a string like '100/s', got {type(text).__name__}",
            parameter="rate_limit",
        )
    got = _RATE_RE.fullmatch(text.strip().replace(" ", ""))
    if got is None:
        raise InvalidArguments(
            f"rate_limit {text!r} is not '<number>/<unit>': write e.g. '100/s', '30/m' or "
            "'2/h' (unit s, m or h)",
            parameter="rate_limit",
        )
    count = float(got.group(1))
    period = _UNITS[got.group(2)]
    if count <= 0:
        raise InvalidArguments(
            f"rate_limit {text!r} allows nothing; the count must be > 0", parameter="rate_limit"
        )
    if count / period > MAX_PER_SECOND:
        raise InvalidArguments(
            f"rate_limit {text!r} is above {MAX_PER_SECOND:g}/s; leave the task unlimited",
            parameter="rate_limit",
        )
    return Rate(count, period, f"{got.group(1)}/{got.group(2)}")


def check_rate_key(key: object) -> str:
    """``key`` if it can name a per-key limit (a non-empty string of at most 256 bytes)."""
    if isinstance(key, bool) or not isinstance(key, str | int):
        raise InvalidArguments(
            f"rate key must be a string or an integer, got {type(key).__name__}",
            parameter="rate_key",
        )
    text = str(key)
    if not text:
        raise InvalidArguments("rate key must not be empty", parameter="rate_key")
    if len(text.encode("utf-8")) > MAX_RATE_KEY:
        raise InvalidArguments(
            f"rate key is {len(text.encode('utf-8'))} bytes; the limit is {MAX_RATE_KEY}",
            parameter="rate_key",
        )
    return text


def key_argument(
    param: str, position: int, default: object, args: tuple[object, ...], kwargs: dict[str, object]
) -> str:
    """The rate key a call passes in parameter ``param`` (at ``position``), checked."""
    if position < len(args):
        value = args[position]
    elif param in kwargs:
        value = kwargs[param]
    else:
        value = default
    try:
        return check_rate_key(value)
    except InvalidArguments as exc:
        raise InvalidArguments(
            f"argument {param!r} is the task's rate key: {exc}", parameter=param
        ) from None


@dataclass(frozen=True, slots=True)
class KeyParts:
    """What a record's KV key names: the task and its rate key ("" for the whole task)."""

    task: str
    key: str


def record_key(task: str, key: str) -> str:
    """The KV key of ``task``'s limit (per ``key`` when not empty); both parts base64url."""
    # base64url has no '.', so the two parts never run into each other.
    return f"{b64_token(task)}.{b64_token(key)}" if key else b64_token(task)


def split_record_key(kv_key: str) -> KeyParts | None:
    """Inverse of :func:`record_key`; None for a key ebind did not write."""
    parts = kv_key.split(".")
    if len(parts) > 2:
        return None
    try:
        task = unb64_token(parts[0])
        key = unb64_token(parts[1]) if len(parts) == 2 else ""
    except (ValueError, UnicodeDecodeError):
        return None
    if not task or (len(parts) == 2 and not key):
        return None
    return KeyParts(task, key)


class RateRecord(msgspec.Struct, kw_only=True, frozen=True):
    """One limit's shared state in the bucket."""

    tat: float
    """Wall-clock seconds at which the next unleased token falls due."""
    per_second: float
    """The rate the last lease used (shown to operators)."""
    holders: dict[str, float] = {}
    """Worker id -> wall-clock time of its last lease (how many share the limit)."""


_record_decoder = msgspec.json.Decoder(RateRecord)
_encode = msgspec.json.Encoder().encode


def fresh_record(now: float, per_second: float) -> RateRecord:
    """The record of a limit nobody has leased from."""
    return RateRecord(tat=now, per_second=per_second)


def decode_record(data: bytes, now: float, hold_limit: float) -> RateRecord | str:
    """The record in ``data``, or why it cannot be trusted (the limiter then resets it)."""
    try:
        rec = _record_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return f"not a rate record: {exc}"
    if not math.isfinite(rec.tat) or rec.tat < 0:
        return f"tat {rec.tat!r} is not a time"
    if rec.tat > now + hold_limit + MAX_AHEAD_SLACK:
        # A lease never books further ahead than the hold limit: this would stall the limit.
        return f"tat is {rec.tat - now:.0f}s ahead; leases never book that far"
    if not (0 < rec.per_second <= MAX_PER_SECOND):
        return f"per_second {rec.per_second!r} is out of range"
    if len(rec.holders) > MAX_HOLDERS:
        return f"{len(rec.holders)} holders; at most {MAX_HOLDERS} are kept"
    for holder, at in rec.holders.items():
        if len(holder) > 200 or not math.isfinite(at):
            return "a holder entry is malformed"
    return rec


def encode_record(rec: RateRecord) -> bytes:
    """The record's bytes for the bucket."""
    return _encode(rec)


def active_holders(rec: RateRecord | None, now: float, me: str) -> dict[str, float]:
    """Workers that leased within :data:`HOLDER_TTL`, plus ``me`` at ``now``."""
    kept = {h: at for h, at in (rec.holders.items() if rec else ()) if now - at < HOLDER_TTL}
    kept[me] = now
    if len(kept) > MAX_HOLDERS:
        kept = dict(sorted(kept.items(), key=lambda item: item[1])[-MAX_HOLDERS:])
    return kept


def block_size(per_second: float, holders: int, demand: int) -> int:
    """Tokens to lease at once: this worker's share of :data:`LEASE_SPAN`, capped by demand.

    A block larger than the local demand would sit unused while other workers wait; one
    smaller than the share costs more KV writes per task.
    """
    share = per_second * LEASE_SPAN / max(holders, 1)
    return max(1, min(int(share), max(demand, 1), MAX_BLOCK))


@dataclass(frozen=True, slots=True)
class Lease:
    """Tokens leased: ``count`` slots ``interval`` apart from ``start`` (wall clock)."""

    start: float
    count: int
    interval: float


def lease(
    rec: RateRecord | None,
    *,
    now: float,
    rate: Rate,
    demand: int,
    holder: str,
    hold_limit: float,
) -> tuple[RateRecord, Lease] | float:
    """The record after leasing a block and the lease, or the seconds until tokens are free.

    A float means the limit is booked further ahead than ``hold_limit``: nothing is leased
    and the caller defers the task by about that long.
    """
    start = max(rec.tat if rec else now, now)
    if start - now > hold_limit:
        return start - now
    holders = active_holders(rec, now, holder)
    count = block_size(rate.per_second, len(holders), demand)
    # Never book past the hold limit: the last token of the block must be usable in time.
    room = int((now + hold_limit - start) / rate.interval + 1e-3) + 1
    count = max(1, min(count, room))
    new = RateRecord(tat=start + count * rate.interval, per_second=rate.per_second, holders=holders)
    return new, Lease(start, count, rate.interval)


def next_want(want: int, spent_cleanly: bool, since_lease: float) -> int:
    """How many tokens to ask for next, from how the last block went.

    A block spent to its last slot within :data:`LEASE_SPAN` means tasks arrive faster than
    blocks this size last: ask for twice as many (the share caps it). Otherwise start again
    from one, so an idle worker does not book tokens others could use.
    """
    if spent_cleanly and since_lease < LEASE_SPAN:
        return min(want * 2, MAX_BLOCK)
    return 1


class TokenBlock:
    """A leased block spent locally, one slot per task, in order."""

    __slots__ = ("dropped", "interval", "left", "next_at", "received")

    def __init__(self) -> None:
        self.next_at = 0.0
        self.left = 0
        self.interval = 0.0
        self.received = 0.0
        self.dropped = 0
        """Slots of this block that went stale unspent."""

    def refill(self, got: Lease, received: float) -> None:
        """Replace what is left with a lease that arrived at ``received``."""
        self.next_at, self.left, self.interval = got.start, got.count, got.interval
        self.received = received
        self.dropped = 0

    @property
    def spent_cleanly(self) -> bool:
        """Every slot went to a task (none went stale)."""
        return self.left == 0 and self.dropped == 0

    def take(self, now: float, stale: float) -> float | None:
        """The next slot's time, or None when the block is spent.

        Slots more than ``stale`` seconds in the past are dropped: spending them late would
        start tasks in a burst above the rate while other workers use later slots. Lateness
        counts from when the lease arrived at the earliest, so a slow KV answer does not
        make a whole block stale on arrival.
        """
        if self.left <= 0:
            return None
        if now - stale > max(self.next_at, self.received):
            behind = now - stale - self.next_at
            skip = math.ceil(behind / self.interval) if self.interval > 0 else self.left
            if skip >= self.left:
                self.dropped += self.left
                self.left = 0
                return None
            self.dropped += skip
            self.left -= skip
            self.next_at += skip * self.interval
        at = self.next_at
        self.next_at += self.interval
        self.left -= 1
        return at
