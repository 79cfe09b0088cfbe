"""Rate-limit admission: a delivery of a limited task waits for its token before it runs.

The token math is :mod:`ebind.ratelimit`; this module does the IO. A worker leases blocks
of tokens from the ``ebind-ratelimits`` bucket with one compare-and-set each and spends
them locally, so at high rates most tasks pass with no KV operation at all.

A limited task never fails, retries or dead-letters for want of a token. It waits in one
of two ways:

- **held**: when its token falls due within :data:`HOLD_LIMIT` seconds, the delivery is
  held (the worker's in-progress acks keep it) and runs at that moment;
- **deferred**: when the limit is booked further ahead, or too many of this worker's slots
  already hold waiting tasks, a delayed copy is published through the countdown path
  (under a message id derived from this delivery, so a crash between the two steps leaves
  one copy) and this delivery is acked. A nak would count as a delivery against the
  server's finite ``max_deliver`` and the task's attempts; a copy starts afresh.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from ebind import observe
from ebind.logging import get_logger
from ebind.payload import open_args
from ebind.ratelimit import (
    HOLDER_TTL,
    Lease,
    Rate,
    RateRecord,
    TokenBlock,
    check_rate_key,
    decode_record,
    encode_record,
    lease,
    next_want,
    record_key,
    split_record_key,
)
from ebind.streams import KV_RATELIMITS

if TYPE_CHECKING:
    from ebind.signature import HandlerSpec
    from ebind.wire import TaskEnvelope

__all__ = ["HOLD_LIMIT", "LimitInfo", "RateAdmission", "list_limits"]

log = get_logger("ebind.worker.ratelimit")

HOLD_LIMIT = 2.0
"""Longest a worker holds a delivery waiting for its token before deferring it instead."""
STALE = 0.05
"""Seconds a leased slot may lie in the past and still be spent."""
EARLY = 0.002
"""Seconds before its slot a task may start: a sleep shorter than this costs more than it
shifts (at high rates the next slots are microseconds ahead)."""
CAS_TRIES = 8
"""Compare-and-set attempts per lease before the task is deferred briefly."""
CONTENDED_DEFER = 0.5
"""Delay of a task deferred because its limit's record kept changing under the lease."""
LEASE_TIMEOUT = 2.0
"""Seconds a lease (its reads and compare-and-sets) may take before the bucket counts as
out of reach."""
MAX_LIMITS = 10_000
"""Limits (task and key) a worker keeps state for before it forgets the idle ones."""
MIN_DEFER = 0.05
"""Shortest delay of a deferred copy."""
KV_TROUBLE_DELAY = 2.0
"""Delay of a task whose limit's bucket is out of reach (and of a failed deferral's nak)."""


@dataclass(slots=True)
class _Limit:
    """This worker's state for one limit (task name, or task name and key)."""

    kv_key: str
    block: TokenBlock = field(default_factory=TokenBlock)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0
    """Deliveries waiting for a lease of this limit."""
    held: int = 0
    """Deliveries holding a slot of this worker until their token's time."""
    record: RateRecord | None = None
    revision: int | None = None
    """Revision of ``record`` in the bucket; None: read it before the next write."""
    defer_at: float = 0.0
    """Wall-clock time the last task deferred here was expected to find a token."""
    want: int = 1
    """Tokens to ask for at the next lease (grows while blocks run out fast)."""
    leased_at: float = 0.0
    failed_at: float = -1e9
    """Monotonic time of the last lease that failed."""


class RateAdmission:
    """Admits deliveries of rate-limited tasks for one worker."""

    def __init__(
        self, app: Any, *, worker_id: str, concurrency: int, hold_limit: float = HOLD_LIMIT
    ) -> None:
        self._app = app
        self._worker_id = worker_id
        self._hold_limit = hold_limit
        # Waiting deliveries hold worker slots: a quarter stays free for tasks without a
        # limit, and no one limit takes more than half, so other keys keep moving.
        self._hold_cap = max(1, concurrency * 3 // 4)
        self._hold_cap_each = max(1, concurrency // 2)
        self._holding = 0
        """Deliveries held for their token, all limits together."""
        self._limits: dict[tuple[str, str], _Limit] = {}
        self._kv: Any = None
        self._codec = getattr(app, "payload_codec", None)
        self.kv_ops = 0
        """KV reads and writes made so far (the bench divides it by tasks run)."""
        self.held = 0
        """Deliveries that waited in place for their token."""
        self.deferred = 0
        """Deliveries deferred as delayed copies."""

    async def admit(self, msg: Any, env: TaskEnvelope, spec: HandlerSpec, seq: int) -> bool:
        """True when ``env`` may run now; False once the delivery was deferred or nak'd."""
        rate = spec.rate_limit
        if rate is None:
            return True
        key = (spec.name, env.rate_key or self._key_in_args(env, spec))
        limit = self._limits.get(key)
        if limit is None:
            limit = self._new_limit(key)
        now = time.time()
        slot = limit.block.take(now, STALE)
        if slot is not None and slot <= now + EARLY:
            return True  # the common case at high rates: a local token, no IO
        if slot is None:
            limit.waiting += 1  # the demand the next lease sizes its block by
            try:
                kind, value = await self._slot(limit, rate)
            finally:
                limit.waiting -= 1
            if kind != "slot":
                await self._wait_as_copy(msg, env, seq, limit, rate, kind, value)
                return False
            slot = float(value)
        wait = slot - time.time()
        if wait > EARLY:
            await self._hold(env, rate, limit, wait)
        return True

    def _key_in_args(self, env: TaskEnvelope, spec: HandlerSpec) -> str:
        """The key argument's value, for a message from a producer without the task's code.

        Producers that have it send the key in the envelope. A value that cannot be a key
        counts against the task-wide limit (the handler's argument check reports it).
        """
        if spec.rate_key is None:
            return ""
        position = spec.positions[spec.rate_key]
        try:
            raw = open_args(self._codec, bytes(env.payload), f"arguments of task {env.name!r}")
            args = msgspec.json.decode(raw)
            value = args[position] if len(args) > position else spec.params[position].default
            return check_rate_key(value)
        except Exception:
            return ""

    async def _hold(self, env: TaskEnvelope, rate: Rate, limit: _Limit, wait: float) -> None:
        """Keep the delivery (the worker's in-progress acks cover it) until its slot."""
        self.held += 1
        self._holding += 1
        limit.held += 1
        _waiting(env, wait, deferred=False, rate_limit=rate.text)
        try:
            await asyncio.sleep(wait)
        finally:
            self._holding -= 1
            limit.held -= 1

    async def _wait_as_copy(
        self,
        msg: Any,
        env: TaskEnvelope,
        seq: int,
        limit: _Limit,
        rate: Rate,
        kind: str,
        value: float | str,
    ) -> None:
        if kind == "error":
            # The bucket is out of reach: wait as a copy, which uses no attempt.
            _trouble("ratelimit.unavailable", env, str(value))
            await self._defer(msg, env, seq, KV_TROUBLE_DELAY, kind)
            return
        booked = float(value) if kind == "booked" else 0.0
        await self._defer(msg, env, seq, self._return_in(limit, rate, booked), kind)

    def _full(self, limit: _Limit) -> bool:
        """Whether held deliveries already take this limit's share of the worker's slots."""
        return self._holding >= self._hold_cap or limit.held >= self._hold_cap_each

    def _new_limit(self, key: tuple[str, str]) -> _Limit:
        if len(self._limits) >= MAX_LIMITS:
            # Many keys (one per customer, say): forget the idle ones; a later task of one
            # of them reads its record again.
            for old in [k for k, v in self._limits.items() if not (v.waiting or v.held)]:
                del self._limits[old]
        limit = self._limits[key] = _Limit(record_key(*key))
        return limit

    async def _slot(self, limit: _Limit, rate: Rate) -> tuple[str, float | str]:
        """A token's slot, or why the task waits as a copy instead.

        ``("slot", time)``, ``("booked", seconds ahead)``, ``("slots", 0)`` (held tasks
        fill this worker's share) or ``("error", what went wrong with the bucket)``.
        """
        async with limit.lock:  # one lease in flight per limit; the others spend its block
            slot = limit.block.take(time.time(), STALE)
            if slot is not None:
                return "slot", slot
            if self._full(limit):
                return "slots", 0.0
            if time.monotonic() - limit.failed_at < KV_TROUBLE_DELAY:
                # The tasks queued behind a failed lease do not each wait for it to fail.
                return "error", "the bucket did not answer a moment ago"
            try:
                async with asyncio.timeout(LEASE_TIMEOUT):
                    got = await self._lease(limit, rate)
            except Exception as exc:
                limit.revision = None
                limit.failed_at = time.monotonic()
                return "error", repr(exc)
            if isinstance(got, float):
                return "booked", got
            now = time.time()
            limit.block.refill(got, now)
            slot = limit.block.take(now, STALE)
            return ("slot", slot) if slot is not None else ("booked", CONTENDED_DEFER)

    async def _lease(self, limit: _Limit, rate: Rate) -> Lease | float:
        """A block of tokens, or seconds until the limit has some (one CAS when uncontended)."""
        from nats.js.errors import KeyWrongLastSequenceError

        kv = await self._bucket()
        now = time.time()
        limit.want = next_want(limit.want, limit.block.spent_cleanly, now - limit.leased_at)
        limit.leased_at = now
        for _ in range(CAS_TRIES):
            if limit.revision is None:
                await self._read(kv, limit)
            assert limit.revision is not None
            got = lease(
                limit.record,
                now=time.time(),
                rate=rate,
                demand=max(limit.waiting, limit.want),
                holder=self._worker_id,
                hold_limit=self._hold_limit,
            )
            if isinstance(got, float):
                # The cached record may be behind; read before the next lease.
                limit.revision = None
                return got
            record, leased = got
            try:
                self.kv_ops += 1
                revision = await kv.update(limit.kv_key, encode_record(record), last=limit.revision)
            except KeyWrongLastSequenceError:
                limit.revision = None  # another worker leased first: read and try again
                continue
            limit.record, limit.revision = record, revision
            return leased
        return CONTENDED_DEFER

    async def _read(self, kv: Any, limit: _Limit) -> None:
        from nats.js.errors import KeyDeletedError, NotFoundError

        self.kv_ops += 1
        try:
            entry = await kv.get(limit.kv_key)
        except KeyDeletedError as exc:
            limit.record, limit.revision = None, int(exc.entry.revision or 0) if exc.entry else 0
            return
        except NotFoundError:
            limit.record, limit.revision = None, 0
            return
        revision = int(entry.revision or 0)
        found = decode_record(bytes(entry.value or b""), time.time(), self._hold_limit)
        if isinstance(found, str):
            # Untrusted bytes: a corrupt record is replaced by the next lease (CAS on its
            # revision), so the limit keeps working from a fresh start.
            log.warning(
                "ratelimit.record_reset", key=limit.kv_key, revision=revision, problem=found
            )
            limit.record, limit.revision = None, revision
            return
        limit.record, limit.revision = found, revision

    async def _bucket(self) -> Any:
        if self._kv is None:
            self._kv = await self._app.js.key_value(KV_RATELIMITS)
        return self._kv

    def _return_in(self, limit: _Limit, rate: Rate, booked: float) -> float:
        """Seconds until a task deferred now should come back.

        Each deferral takes the next token-sized step after the last one, so deferred tasks
        return spread at the rate, in order, instead of all at once; they arrive half a hold
        limit early and are held for their token.
        """
        now = time.time()
        rec = limit.record
        booked = max(booked, (rec.tat - now) if rec is not None else 0.0)
        expected = max(limit.defer_at + rate.interval, now + booked)
        limit.defer_at = expected
        return max(expected - now - self._hold_limit / 2, MIN_DEFER)

    async def _defer(self, msg: Any, env: TaskEnvelope, seq: int, ahead: float, why: str) -> None:
        """Publish a delayed copy of ``env`` and ack this delivery (nak when that fails)."""
        countdown = ahead
        copy = msgspec.structs.replace(env, attempt=0, worker_id="")
        msg_id = f"{env.id}.rate.{seq}" if seq else None
        try:
            await self._app.publish_task(copy, msg_id=msg_id, countdown=countdown)
        except Exception as exc:
            await self._hand_back(msg, env, repr(exc))
            return
        self.deferred += 1
        _waiting(env, countdown, deferred=True, reason=why)
        await msg.ack()

    async def _hand_back(self, msg: Any, env: TaskEnvelope, error: str) -> None:
        """Nak the delivery when not even a delayed copy could be published."""
        _trouble("ratelimit.defer_failed", env, error)
        await msg.nak(delay=KV_TROUBLE_DELAY)


def _waiting(env: TaskEnvelope, seconds: float, *, deferred: bool, **fields: Any) -> None:
    """The debug line and the metric of a task waiting for its token."""
    log.debug(
        "task.rate_deferred" if deferred else "task.rate_limited",
        task_id=env.id,
        task_name=env.name,
        rate_key=env.rate_key or None,
        wait_ms=round(seconds * 1000),
        **fields,
    )
    observe.emit(observe.RATE_LIMITED, task=env.name, seconds=seconds, deferred=deferred)


def _trouble(event: str, env: TaskEnvelope, error: str) -> None:
    log.warning(event, task_id=env.id, task_name=env.name, error=error, retry_in=KV_TROUBLE_DELAY)


class LimitInfo(msgspec.Struct, kw_only=True, frozen=True):
    """One rate limit as an operator sees it (``ebind ratelimit ls``)."""

    task: str
    key: str
    """The rate key ("" for the task-wide limit)."""
    per_second: float
    booked_ahead: float
    """Seconds of tokens already leased past now: about how long a new task would wait."""
    workers: int
    """Workers that leased from it within the last few seconds."""
    problem: str = ""
    """Why the record cannot be trusted (the next lease resets it)."""


async def list_limits(js: Any, *, limit: int = 10_000) -> list[LimitInfo]:
    """Every rate-limit record in the bucket, read once (at most ``limit``)."""
    from ebind.workflow._kvread import list_last

    prefix = f"$KV.{KV_RATELIMITS}."
    # One batched read of every record (nats-py's kv.keys() can end before its entries).
    entries = sorted(
        (m.subject[len(prefix) :], m.data)
        for m in await list_last(js, f"KV_{KV_RATELIMITS}", prefix + ">")
    )
    now = time.time()
    found: list[LimitInfo] = []
    for kv_key, data in entries[:limit]:
        parts = split_record_key(kv_key)
        if parts is None:
            continue
        rec = decode_record(data, now, HOLD_LIMIT)
        if isinstance(rec, str):
            found.append(
                LimitInfo(
                    task=parts.task,
                    key=parts.key,
                    per_second=0,
                    booked_ahead=0,
                    workers=0,
                    problem=rec,
                )
            )
            continue
        found.append(
            LimitInfo(
                task=parts.task,
                key=parts.key,
                per_second=rec.per_second,
                booked_ahead=max(rec.tat - now, 0.0),
                workers=sum(1 for at in rec.holders.values() if now - at < HOLDER_TTL),
            )
        )
    return found
