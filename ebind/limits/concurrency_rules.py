"""Pure rules of concurrency keys: the limit, the key of a call, slot names and lease records.

A task with a concurrency limit runs only while it holds one of ``limit`` slots of its key.
A slot is a key in the ``ebind-leases`` bucket holding a :class:`SlotLease` with a TTL; the
IO that takes, renews and frees slots is in :mod:`ebind.limits.concurrency`. Everything
here is deterministic (the clock and randomness are passed in), so it is tested on its own.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from ebind.errors import InvalidArguments
from ebind.wire import ErrorKind, TaskError

__all__ = [
    "CANCEL_PREFIX",
    "MAX_DEFER",
    "MAX_KEY_LEN",
    "MAX_LIMIT",
    "MIN_LEASE_TTL",
    "SLOT_PREFIX",
    "CancelNotice",
    "Concurrency",
    "ConcurrencyStrategy",
    "SlotLease",
    "SlotRow",
    "SlotView",
    "call_key",
    "cancel_key",
    "cancelled_task_id",
    "check_key",
    "decode_lease",
    "decode_notice",
    "defer_delay",
    "free_slot",
    "key_group",
    "lease_ttl_header",
    "may_hold",
    "renew_interval",
    "slot_key",
    "slot_row",
    "superseded_error",
    "victim",
]

SLOT_PREFIX = "conc."
"""Bucket keys of concurrency slots start with this."""
CANCEL_PREFIX = "superseded."
"""Bucket keys of cancel-in-progress notices start with this."""
MAX_KEY_LEN = 256
"""The longest concurrency key a task may carry, in characters."""
MAX_LIMIT = 1000
"""The most slots one key may have (each is a bucket key a waiter may read)."""
MIN_LEASE_TTL = 1.0
"""The server's smallest per-message TTL, in seconds."""
MAX_DEFER = 30.0
"""The longest a re-published waiter stays away, in seconds."""
_SKEW = 2.0
"""Seconds of clock difference between hosts tolerated when judging another's record."""


class ConcurrencyStrategy(str, enum.Enum):
    """What a task does when every slot of its key is taken."""

    QUEUE = "queue"
    """Wait for a slot; a worker holds a few waiters of a key, so a freed slot is taken at once."""
    ROUND_ROBIN = "round_robin"
    """Wait for a slot at the back of the stream: a worker holds no waiters, so the tasks
    of other keys behind a key's backlog run in between."""
    CANCEL_IN_PROGRESS = "cancel_in_progress"
    """Cancel the oldest running task of the key and take its slot."""


KeyFn = Callable[..., object]


@dataclass(frozen=True, slots=True, kw_only=True)
class Concurrency:
    """At most ``limit`` tasks of one key run at once across the cluster.

    ``key`` names an argument whose value is the key, or is a function called with the
    task's arguments by name; None puts every call of the task under one key.
    ``lease_ttl`` is how long a slot outlives a worker that died holding it.
    """

    limit: int
    key: str | KeyFn | None = None
    strategy: ConcurrencyStrategy | str = ConcurrencyStrategy.QUEUE
    lease_ttl: float = 30.0
    hold: float = 10.0
    """Seconds a worker holds a waiting delivery before it re-publishes it for later."""

    def __post_init__(self) -> None:
        limit = self.limit
        if not _whole(limit) or not 1 <= limit <= MAX_LIMIT:
            raise InvalidArguments(
                f"concurrency limit must be an int from 1 to {MAX_LIMIT}, got {limit!r}",
                parameter="concurrency",
            )
        try:
            strategy = ConcurrencyStrategy(self.strategy)
        except ValueError:
            choices = ", ".join(s.value for s in ConcurrencyStrategy)
            raise InvalidArguments(
                f"concurrency strategy must be one of {choices}, got {self.strategy!r}",
                parameter="concurrency",
            ) from None
        object.__setattr__(self, "strategy", strategy)
        key = self.key
        if key is not None and not (isinstance(key, str) and key) and not callable(key):
            raise InvalidArguments(
                "concurrency key must be an argument name or a function of the arguments, "
                f"got {key!r}",
                parameter="concurrency_key",
            )
        for name, value, least in (
            ("lease_ttl", self.lease_ttl, MIN_LEASE_TTL),
            ("hold", self.hold, 0.0),
        ):
            if not _number(value) or not least <= value < math.inf:
                raise InvalidArguments(
                    f"concurrency {name} must be a finite number of seconds >= {least:g}, "
                    f"got {value!r}",
                    parameter="concurrency",
                )

    @property
    def mode(self) -> ConcurrencyStrategy:
        """The strategy as the enum (``strategy`` is normalised to it on construction)."""
        return ConcurrencyStrategy(self.strategy)


def _whole(value: object) -> bool:
    # bool is an int subclass, but True is no limit anyone means
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_key(value: object) -> str:
    """``value`` as a concurrency key; InvalidArguments when it cannot be one."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidArguments(
            f"a concurrency key must be a str or an int, got {type(value).__name__}",
            parameter="concurrency_key",
        )
    key = str(value)
    if not key or len(key) > MAX_KEY_LEN:
        raise InvalidArguments(
            f"a concurrency key must have 1 to {MAX_KEY_LEN} characters, got {len(key)}",
            parameter="concurrency_key",
        )
    return key


def call_key(
    limit: Concurrency,
    param_names: Sequence[str],
    defaults: Mapping[str, Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
) -> str:
    """The key of one call: from the named argument or the key function ("" for none)."""
    if limit.key is None:
        return ""
    bound: dict[str, Any] = dict(defaults)
    bound.update(zip(param_names, args, strict=False))
    bound.update(kwargs)
    if isinstance(limit.key, str):
        if limit.key not in bound:
            raise InvalidArguments(
                f"concurrency key argument {limit.key!r} was not given and has no default",
                parameter="concurrency_key",
            )
        return check_key(bound[limit.key])
    try:
        value = limit.key(**bound)
    except InvalidArguments:
        raise
    except Exception as exc:
        raise InvalidArguments(
            f"the concurrency key function raised {type(exc).__name__}: {exc}",
            parameter="concurrency_key",
        ) from exc
    return check_key(value)


def key_group(task_name: str, key: str) -> str:
    """The bucket-key token of (task, key): a digest, so any key text is a safe subject."""
    # length-prefixed, so no (name, key) pair spells another's
    digest = hashlib.sha256(f"{len(task_name)}:{task_name}{key}".encode()).hexdigest()
    return digest[:32]


def slot_key(group: str, slot: int) -> str:
    """The bucket key of slot ``slot`` of ``group``."""
    return f"{SLOT_PREFIX}{group}.{slot}"


def cancel_key(task_id: str) -> str:
    """The bucket key of the notice that cancels running task ``task_id``."""
    return CANCEL_PREFIX + task_id


def cancelled_task_id(key: str) -> str | None:
    """The task id a notice key names (None for any other key)."""
    if not key.startswith(CANCEL_PREFIX):
        return None
    task_id = key[len(CANCEL_PREFIX) :]
    return task_id if task_id and "." not in task_id else None


def lease_ttl_header(seconds: float) -> str:
    """``Nats-TTL`` for a record kept ``seconds`` (whole milliseconds, at least one second)."""
    return f"{round(max(seconds, MIN_LEASE_TTL) * 1000)}ms"


def renew_interval(ttl: float) -> float:
    """Seconds between renewals: a third of the TTL, so two may be late before it lapses."""
    return ttl / 3


class SlotLease(msgspec.Struct, frozen=True, kw_only=True):
    """The record of a taken slot: who runs what, since and until when (unix seconds)."""

    task_id: str
    task_name: str
    key: str
    worker_id: str
    started_at: float
    expires_at: float


class CancelNotice(msgspec.Struct, frozen=True, kw_only=True):
    """The record asking the worker running ``task_id`` to stop it for a newer task."""

    task_id: str
    by: str
    key: str


_lease_decoder = msgspec.json.Decoder(SlotLease)
_notice_decoder = msgspec.json.Decoder(CancelNotice)


def decode_lease(data: bytes, task_name: str, key: str, ttl: float, now: float) -> SlotLease | None:
    """The lease in ``data`` if it is well formed, for this task and key, and plausible in time.

    A record that fails any check is treated as a free slot (the caller logs it): a bad
    record must not hold a key forever.
    """
    try:
        lease = _lease_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if lease.task_name != task_name or lease.key != key:
        return None
    if not (math.isfinite(lease.started_at) and math.isfinite(lease.expires_at)):
        return None
    if lease.started_at > now + _SKEW or lease.expires_at > now + ttl + _SKEW:
        return None  # from the future: forged, or written for a far longer TTL
    if not lease.task_id or len(lease.task_id) > 256 or len(lease.worker_id) > 256:
        return None
    return lease


def decode_notice(data: bytes) -> CancelNotice | None:
    """The cancel notice in ``data``, None when it is not one."""
    try:
        notice = _notice_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if len(notice.by) > 256 or len(notice.key) > MAX_KEY_LEN:
        return None
    return notice


@dataclass(frozen=True, slots=True)
class SlotView:
    """What a reader found in one slot: its stream revision and the valid lease, if any."""

    slot: int
    revision: int
    """0 when the slot's key holds nothing."""
    lease: SlotLease | None
    """None: empty, deleted, corrupt or expired (the slot may be taken)."""


def free_slot(views: Sequence[SlotView], now: float) -> SlotView | None:
    """The first slot that may be taken: empty, unreadable or past its expiry."""
    for view in views:
        if view.lease is None or view.lease.expires_at <= now - _SKEW:
            return view
    return None


def victim(views: Sequence[SlotView], spared: frozenset[str]) -> SlotLease | None:
    """The oldest running lease (cancel-in-progress), skipping ids already asked to stop."""
    leases = [v.lease for v in views if v.lease is not None and v.lease.task_id not in spared]
    if not leases:
        return None
    return min(leases, key=lambda lease: (lease.started_at, lease.task_id))


def may_hold(
    strategy: ConcurrencyStrategy, capacity: int, key_holding: int, total_holding: int
) -> bool:
    """Whether a worker may hold one more waiter (of a key it holds ``key_holding`` of).

    Held waiters take the worker's capacity, so a worker holds at most a quarter of it per
    key and half of it in all; the rest are re-published. ``round_robin`` holds none: every
    waiter goes to the back of the stream, so keys take turns.
    """
    if strategy is ConcurrencyStrategy.ROUND_ROBIN:
        return False
    return key_holding < max(1, capacity // 4) and total_holding < capacity // 2


def defer_delay(waited: float, jitter: float) -> float:
    """Seconds until a re-published waiter comes back: a quarter of how long it has waited.

    Kept between half a second and :data:`MAX_DEFER`, so a long backlog of one key costs
    few re-publishes; ``jitter`` in [0, 1) spreads waiters so they do not return together.
    """
    if not math.isfinite(waited):
        waited = 0.0
    base = min(max(waited / 4, 0.5), MAX_DEFER)
    return round(base * (1.0 + 0.5 * min(max(jitter, 0.0), 1.0)), 3)


def superseded_error(task_id: str, by: str, key: str) -> TaskError:
    """The error a task cancelled for a newer one of its key ends with."""
    shown = f" {key!r}" if key else ""
    return TaskError(
        kind=ErrorKind.SUPERSEDED.value,
        message=(
            f"task {task_id} was cancelled by newer task {by} of concurrency key{shown} "
            "(cancel_in_progress)"
        ),
        retryable=False,
    )


def task_limit(
    concurrency: int | Concurrency | None,
    key: str | KeyFn | None,
    param_names: Sequence[str],
) -> Concurrency | None:
    """The limit ``@app.task(concurrency=..., concurrency_key=...)`` asks for, checked."""
    if concurrency is None:
        if key is not None:
            raise InvalidArguments(
                "concurrency_key needs concurrency= (the most calls of one key running at once)",
                parameter="concurrency_key",
            )
        return None
    if isinstance(concurrency, Concurrency):
        if key is not None:
            raise InvalidArguments(
                "give the key inside Concurrency(key=...) or as concurrency_key=, not both",
                parameter="concurrency_key",
            )
        limit = concurrency
    else:
        limit = Concurrency(limit=concurrency, key=key)
    if isinstance(limit.key, str) and limit.key not in param_names:
        raise InvalidArguments(
            f"concurrency key {limit.key!r} is not a parameter of the task "
            f"(parameters: {', '.join(param_names) or 'none'})",
            parameter="concurrency_key",
        )
    return limit


class SlotRow(msgspec.Struct, frozen=True, kw_only=True):
    """One taken slot as ``ebind concurrency ls`` shows it (``valid`` False: a bad record)."""

    bucket_key: str
    slot: int
    task_name: str = ""
    key: str = ""
    task_id: str = ""
    worker_id: str = ""
    running_for: float = 0.0
    expires_in: float = 0.0
    valid: bool = True


def slot_row(bucket_key: str, data: bytes, now: float) -> SlotRow | None:
    """What the record at ``bucket_key`` says, checked against its key (None: not a slot key)."""
    parts = bucket_key.split(".")
    # A slot number is below MAX_LIMIT: ASCII digits, at most four (isdigit alone passes "²").
    digits = parts[2] if len(parts) == 3 else ""
    if parts[0] + "." != SLOT_PREFIX or not (digits.isascii() and digits.isdigit()):
        return None
    if len(digits) > 4:
        return None
    slot = int(parts[2])
    try:
        lease = _lease_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return SlotRow(bucket_key=bucket_key, slot=slot, valid=False)
    if key_group(lease.task_name, lease.key) != parts[1]:
        return SlotRow(bucket_key=bucket_key, slot=slot, valid=False)
    return SlotRow(
        bucket_key=bucket_key,
        slot=slot,
        task_name=lease.task_name,
        key=lease.key,
        task_id=lease.task_id,
        worker_id=lease.worker_id,
        running_for=max(0.0, now - lease.started_at),
        expires_in=lease.expires_at - now,
        valid=math.isfinite(lease.expires_at) and math.isfinite(lease.started_at),
    )
