"""A worker's side of concurrency keys: take a slot lease, hold or re-publish waiters, renew, free.

A slot is a key ``conc.<group>.<n>`` in the ``ebind-leases`` bucket, written with a
per-message TTL and renewed while its task runs, so a worker that dies holding one frees
it when the TTL lapses. Taking a slot is a conditional write (the slot is empty, or holds
the record just read and found expired, deleted or corrupt), so two workers never both
win it. A delivery that finds every slot taken waits a bounded time (in-progress acks
keep it), then is re-published with a countdown and acked: waiting never spends
deliveries, so it can never reach the server's delivery limit and the dead-letter queue.

Cancel-in-progress writes ``superseded.<task id>`` for the oldest holder; the worker
running it hears the write on its subscription and cancels it the way a revocation does.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from ebind import observe
from ebind.limits.concurrency_rules import (
    CANCEL_PREFIX,
    SLOT_PREFIX,
    CancelNotice,
    Concurrency,
    ConcurrencyStrategy,
    SlotLease,
    SlotRow,
    SlotView,
    cancel_key,
    cancelled_task_id,
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
    victim,
)
from ebind.logging import get_logger
from ebind.streams import KV_LEASES
from ebind.wire import TaskEnvelope, TaskError, encoder

if TYPE_CHECKING:
    from ebind.context import Context

__all__ = ["CONCURRENCY_DEFERRED", "CONCURRENCY_WAIT", "ConcurrencyGate", "SlotHeld", "list_slots"]

log = get_logger("ebind.limits.concurrency")

CONCURRENCY_WAIT = observe.CONCURRENCY_WAIT
CONCURRENCY_DEFERRED = observe.CONCURRENCY_DEFERRED
_STREAM = f"KV_{KV_LEASES}"
_SUBJECT = f"$KV.{KV_LEASES}."
_CANCEL_SUBJECTS = f"{_SUBJECT}{CANCEL_PREFIX}>"
_FIRST_POLL = 0.1
_MAX_POLL = 1.0
_RELEASED_TTL = "1s"
"""A freed slot's delete marker lapses too, so a key's many past slots leave nothing behind."""
_MAX_REMEMBERED = 10_000
_OP = "KV-Operation"
_UNREAD = "?"
"""The task id of a slot that could not be read (counted as taken, never cancelled)."""


@dataclass(slots=True, eq=False)
class SlotHeld:
    """A slot this worker holds for one running task."""

    group: str
    slot: int
    revision: int
    record: SlotLease
    limit: Concurrency
    superseded_by: str = ""
    waited: bool = False
    """Taken after a wait (a revocation may have come meanwhile)."""
    renewer: asyncio.Task[None] | asyncio.TimerHandle | None = field(default=None, repr=False)
    """A timer until the first renewal is due, then the renewing task (short runs need none)."""


@dataclass(slots=True, eq=False)
class _Waiter:
    """A delivery held here until a slot of its key frees."""

    env: TaskEnvelope
    limit: Concurrency
    fut: asyncio.Future[SlotHeld | None] | None = None
    """Set while it sleeps: resolved with a handed-over slot, or None to look again."""


def _still_running(exc: BaseException) -> asyncio.Future[Any] | None:
    """The future of a handler still running behind ``exc`` (its cause chain), if any."""
    seen: BaseException | None = exc
    for _ in range(8):  # a short chain: the attempt error, the time-limit error
        if seen is None:
            return None
        running = getattr(seen, "ebind_still_running", None)
        if isinstance(running, asyncio.Future):
            return running
        seen = seen.__cause__ or seen.__context__
    return None


class ConcurrencyGate:
    """Admits deliveries of tasks with a concurrency limit; one per worker."""

    def __init__(self, app: Any, worker_id: str, capacity: int) -> None:
        self._app = app
        self._nc = app.nc
        self._worker_id = worker_id
        self._capacity = capacity
        self._holding: dict[str, int] = {}
        self._queues: dict[str, list[_Waiter]] = {}
        """The waiters each key's group holds here, oldest first."""
        self._running: dict[str, tuple[SlotHeld, Context, asyncio.Task[Any] | None]] = {}
        self._notices: dict[str, CancelNotice] = {}
        self._freed: dict[str, int] = {}
        """Slot key -> revision of the delete marker this worker wrote when it freed it."""
        self._asked: set[str] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._sub: Any = None
        self._stopping = False
        self._rng = random.Random()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Listen for cancel-in-progress notices."""
        self._sub = await self._nc.subscribe(_CANCEL_SUBJECTS, cb=self._on_notice)

    async def stop(self) -> None:
        """Stop listening and hand held waiters back; running tasks free their slots as they end."""
        self._stopping = True
        for group in list(self._queues):
            self._wake(group)
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()

    # ------------------------------------------------------------------ admission
    async def admit(
        self, msg: Any, env: TaskEnvelope, limit: Concurrency, ctx: Context
    ) -> SlotHeld | None:
        """A slot for this delivery, or None once the delivery was handed back for later.

        Waits at most ``limit.hold`` seconds (fewer waiters per key than the hold cap) for a
        slot to free; past that the task is re-published with a countdown and acked.
        """
        group = key_group(env.name, env.concurrency_key)
        first = self._rng.randrange(limit.limit)
        # a slot freed here a moment ago holds its delete marker: expect that, not nothing
        expected = self._freed.pop(slot_key(group, first), 0)
        held = await self._try(group, first, expected, env, limit)
        if held is not None:
            return held
        waiting = self._holding.get(group, 0)
        total = sum(self._holding.values())
        hold = limit.hold if may_hold(limit.mode, self._capacity, waiting, total) else 0.0
        self._holding[group] = waiting + 1
        try:
            held = await self._wait(group, env, limit, ctx, hold)
            if held is not None:
                held.waited = True
        finally:
            left = self._holding[group] - 1
            if left:
                self._holding[group] = left
            else:
                del self._holding[group]
        if held is not None:
            return held
        await self._defer(msg, env)
        return None

    async def _wait(
        self, group: str, env: TaskEnvelope, limit: Concurrency, ctx: Context, hold: float
    ) -> SlotHeld | None:
        waiter = _Waiter(env, limit)
        queue = self._queues.setdefault(group, [])
        queue.append(waiter)
        try:
            return await self._waiting(group, waiter, ctx, hold)
        finally:
            queue.remove(waiter)
            if not queue:
                self._queues.pop(group, None)

    async def _waiting(
        self, group: str, waiter: _Waiter, ctx: Context, hold: float
    ) -> SlotHeld | None:
        env, limit = waiter.env, waiter.limit
        deadline = time.monotonic() + hold
        poll = _FIRST_POLL
        announced = False
        while True:
            views = await self._scan(group, env, limit)
            free = free_slot(views, time.time())
            if free is not None:
                held = await self._try(group, free.slot, free.revision, env, limit)
                if held is not None:
                    if announced:
                        await _note(ctx, "running: got a concurrency slot")
                    return held
                continue  # another worker won it: look again at once
            if limit.mode is ConcurrencyStrategy.CANCEL_IN_PROGRESS:
                await self._cancel_oldest(views, env, limit)
            if not announced:
                announced = True
                await self._announce(env, limit, views, ctx)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stopping:
                return None  # a stopping worker hands its waiters back at once
            handed = await self._sleep(waiter, min(poll, remaining))
            if handed is not None:
                await _note(ctx, "running: got a concurrency slot")
                return handed
            poll = min(poll * 2, _MAX_POLL)

    async def _announce(
        self, env: TaskEnvelope, limit: Concurrency, views: list[SlotView], ctx: Context
    ) -> None:
        running = sum(1 for v in views if v.lease is not None)
        log.info(
            CONCURRENCY_WAIT,
            task_id=env.id,
            task_name=env.name,
            concurrency_key=env.concurrency_key,
            limit=limit.limit,
            running=running,
            strategy=limit.mode.value,
        )
        observe.emit(CONCURRENCY_WAIT, task=env.name)
        shown = f" {env.concurrency_key!r}" if env.concurrency_key else ""
        await _note(ctx, f"waiting for a concurrency slot of key{shown} ({running} running)")

    async def _sleep(self, waiter: _Waiter, seconds: float) -> SlotHeld | None:
        """Sleep up to ``seconds``; a slot freed on this worker may be handed over meanwhile."""
        fut: asyncio.Future[SlotHeld | None] = asyncio.get_running_loop().create_future()
        waiter.fut = fut
        try:
            return await asyncio.wait_for(fut, seconds)
        except TimeoutError:
            return None
        except BaseException:
            # cancelled (shutdown) just as a slot was handed over: give it back
            if fut.done() and not fut.cancelled() and (got := fut.result()) is not None:
                self._free(got)
            raise
        finally:
            waiter.fut = None

    def _wake(self, group: str) -> None:
        for waiter in self._queues.get(group, ()):
            if waiter.fut is not None and not waiter.fut.done():
                waiter.fut.set_result(None)

    def _sleeper(self, group: str) -> _Waiter | None:
        """The longest-waiting holder of ``group`` that is asleep now (it takes a handover)."""
        for waiter in self._queues.get(group, ()):
            if waiter.fut is not None and not waiter.fut.done():
                return waiter
        return None

    async def _defer(self, msg: Any, env: TaskEnvelope) -> None:
        """Re-publish the task to come back later and ack this delivery (a nak on failure)."""
        from ebind.worker.runner import stream_seq

        waited = 0.0
        if env.enqueued_at is not None:
            waited = max(0.0, time.time() - env.enqueued_at.timestamp())
        delay = defer_delay(waited, self._rng.random())
        copy = msgspec.structs.replace(env, attempt=0, worker_id="")
        try:
            await self._app.publish_task(
                copy, msg_id=f"{env.id}.w{stream_seq(msg)}", countdown=delay
            )
        except Exception as exc:
            log.warning("task.concurrency_defer_failed", task_id=env.id, error=str(exc))
            await msg.nak(delay=delay)
            return
        await msg.ack()
        log.info(
            CONCURRENCY_DEFERRED,
            task_id=env.id,
            task_name=env.name,
            concurrency_key=env.concurrency_key,
            back_in=delay,
        )
        observe.emit(CONCURRENCY_DEFERRED, task=env.name)

    # ------------------------------------------------------------------ slots in KV
    def _record(self, env: TaskEnvelope, limit: Concurrency, started: float) -> SlotLease:
        return SlotLease(
            task_id=env.id,
            task_name=env.name,
            key=env.concurrency_key,
            worker_id=self._worker_id,
            started_at=started,
            expires_at=time.time() + limit.lease_ttl,
        )

    async def _try(
        self, group: str, slot: int, expected: int, env: TaskEnvelope, limit: Concurrency
    ) -> SlotHeld | None:
        """Write our lease into ``slot`` if it still is at revision ``expected``."""
        record = self._record(env, limit, time.time())
        key = slot_key(group, slot)
        try:
            revision = await self._put(key, record, limit.lease_ttl, expected)
        except Exception as exc:  # unreachable bucket: wait as if the slot were taken
            log.warning("concurrency.slot_write_failed", key=key, error=str(exc))
            return None
        if revision is None:
            return None
        return SlotHeld(group=group, slot=slot, revision=revision, record=record, limit=limit)

    async def _put(self, key: str, record: SlotLease, ttl: float, expected: int) -> int | None:
        """Write ``record`` if ``key`` is at revision ``expected``: its new revision, or None."""
        from nats.js.errors import KeyWrongLastSequenceError

        from ebind._jsreq import HEADER_EXPECTED_LAST_SUBJECT_SEQ, requests_for

        headers = {
            HEADER_EXPECTED_LAST_SUBJECT_SEQ: str(expected),
            "Nats-TTL": lease_ttl_header(ttl),
        }
        try:
            ack = await requests_for(self._nc).publish(
                _SUBJECT + key, encoder.encode(record), headers
            )
        except KeyWrongLastSequenceError:
            return None
        return int(ack.seq)

    async def _scan(self, group: str, env: TaskEnvelope, limit: Concurrency) -> list[SlotView]:
        reads = [self._read(group, slot, env, limit) for slot in range(limit.limit)]
        return list(await asyncio.gather(*reads))

    async def _read(self, group: str, slot: int, env: TaskEnvelope, limit: Concurrency) -> SlotView:
        from ebind._jsreq import requests_for

        key = slot_key(group, slot)
        try:
            got = await requests_for(self._nc).get_last(_STREAM, _SUBJECT + key)
        except Exception as exc:  # counted as taken, so an unreadable bucket never over-admits
            log.warning("concurrency.slot_read_failed", key=key, error=str(exc))
            busy = SlotLease(
                task_id=_UNREAD,
                task_name=env.name,
                key=env.concurrency_key,
                worker_id="?",
                started_at=0.0,
                expires_at=float("inf"),
            )
            return SlotView(slot, -1, busy)
        if got is None:
            return SlotView(slot, 0, None)
        headers = got.headers or {}
        revision = int(headers.get("Nats-Sequence", 0) or 0)
        if headers.get(_OP):
            return SlotView(slot, revision, None)
        lease = decode_lease(
            bytes(got.data), env.name, env.concurrency_key, limit.lease_ttl, time.time()
        )
        if lease is None:
            log.warning(
                "concurrency.bad_slot_record",
                key=key,
                task_name=env.name,
                note="not a valid lease of this task and key: the slot counts as free",
            )
        return SlotView(slot, revision, lease)

    # ------------------------------------------------------------------ running
    async def guard(
        self, held: SlotHeld, ctx: Context, is_async: bool, run: Awaitable[bytes]
    ) -> bytes:
        """Run ``run`` holding the slot: renew it, free it after, obey cancel notices."""
        from ebind.worker.outcome import AttemptError

        current = asyncio.current_task() if is_async else None
        task_id = held.record.task_id
        self._running[task_id] = (held, ctx, current)
        interval = renew_interval(held.limit.lease_ttl)
        held.renewer = asyncio.get_running_loop().call_later(interval, self._renewing, held)
        lingering: asyncio.Future[Any] | None = None
        try:
            notice = self._notices.pop(task_id, None)
            if notice is not None:  # asked before it was registered here
                self._stop(held, ctx, current, notice)
            result = await run
        except asyncio.CancelledError as exc:
            lingering = _still_running(exc)  # a thread a shutdown's cancel cannot stop
            if held.superseded_by and current is not None and current.cancelling() == 1:
                current.uncancel()
                raise AttemptError(self._error(held)) from None
            raise
        except Exception as exc:
            lingering = _still_running(exc)
            if held.superseded_by:
                raise AttemptError(self._error(held)) from None
            raise
        finally:
            self._running.pop(task_id, None)
            if lingering is not None and not lingering.done():
                # A sync handler's thread runs on past its timeout: the call still runs,
                # so its slot stays held (and renewed) until the thread returns.
                lingering.add_done_callback(lambda _done: self._free(held))
            else:
                self._free(held)
        if held.superseded_by:
            raise AttemptError(self._error(held))
        return result

    def _error(self, held: SlotHeld) -> TaskError:
        return superseded_error(held.record.task_id, held.superseded_by, held.record.key)

    def _renewing(self, held: SlotHeld) -> None:
        held.renewer = asyncio.create_task(self._renew(held), name="ebind-slot-renew")

    async def _renew(self, held: SlotHeld) -> None:
        interval = renew_interval(held.limit.lease_ttl)
        key = slot_key(held.group, held.slot)
        while True:
            record = msgspec.structs.replace(
                held.record, expires_at=time.time() + held.limit.lease_ttl
            )
            try:
                revision = await self._put(key, record, held.limit.lease_ttl, held.revision)
            except Exception as exc:  # try again next time; the lease lasts two more
                log.warning("concurrency.renew_failed", key=key, error=str(exc))
                await asyncio.sleep(interval)
                continue
            if revision is None:
                log.warning(
                    "concurrency.lease_lost",
                    task_id=held.record.task_id,
                    key=key,
                    note="the slot was taken over (its lease lapsed): the limit may be exceeded",
                )
                return
            held.revision, held.record = revision, record
            await asyncio.sleep(interval)

    def release(self, held: SlotHeld) -> None:
        """Free a slot taken for a run that will not happen."""
        self._free(held)

    def _free(self, held: SlotHeld) -> None:
        if held.renewer is not None:
            held.renewer.cancel()
        task = asyncio.create_task(self._delete(held), name="ebind-slot-free")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _delete(self, held: SlotHeld) -> None:
        from ebind._jsreq import HEADER_EXPECTED_LAST_SUBJECT_SEQ, requests_for

        key = slot_key(held.group, held.slot)
        if await self._hand_over(held, key):
            return
        headers = {
            _OP: "DEL",
            HEADER_EXPECTED_LAST_SUBJECT_SEQ: str(held.revision),
            "Nats-TTL": _RELEASED_TTL,
        }
        try:
            ack = await requests_for(self._nc).publish(_SUBJECT + key, b"", headers)
        except Exception as exc:  # it lapses with its TTL instead
            log.info("concurrency.slot_free_failed", key=key, error=str(exc))
        else:
            if len(self._freed) >= _MAX_REMEMBERED:
                self._freed.clear()
            self._freed[key] = int(ack.seq)
        self._wake(held.group)

    async def _hand_over(self, held: SlotHeld, key: str) -> bool:
        """Give the slot to the oldest waiter sleeping here (one write, no scan): True if done.

        Waiters of one key on one worker thus run in arrival order. If the waiter stopped
        waiting during the write, the slot it was given is freed instead.
        """
        waiter = self._sleeper(held.group)
        if waiter is None:
            return False
        record = self._record(waiter.env, waiter.limit, time.time())
        try:
            revision = await self._put(key, record, waiter.limit.lease_ttl, held.revision)
        except Exception as exc:
            log.info("concurrency.hand_over_failed", key=key, error=str(exc))
            return False
        if revision is None:
            return False  # the lease lapsed and another worker took the slot
        given = SlotHeld(held.group, held.slot, revision, record, waiter.limit)
        fut = waiter.fut
        if fut is not None and not fut.done():
            fut.set_result(given)
            return True
        await self._delete(given)
        return True

    # ------------------------------------------------------------------ cancel-in-progress
    async def _cancel_oldest(
        self, views: list[SlotView], env: TaskEnvelope, limit: Concurrency
    ) -> None:
        from nats.js.errors import KeyWrongLastSequenceError

        from ebind._jsreq import HEADER_EXPECTED_LAST_SUBJECT_SEQ, requests_for

        while True:
            oldest = victim(views, frozenset({*self._asked, _UNREAD}))
            if oldest is None:
                return
            self._remember(self._asked, oldest.task_id)
            notice = CancelNotice(task_id=oldest.task_id, by=env.id, key=env.concurrency_key)
            headers = {
                HEADER_EXPECTED_LAST_SUBJECT_SEQ: "0",
                # it is heard at once; the TTL only covers a run that is just starting
                "Nats-TTL": lease_ttl_header(limit.lease_ttl),
            }
            try:
                await requests_for(self._nc).publish(
                    _SUBJECT + cancel_key(oldest.task_id), encoder.encode(notice), headers
                )
            except KeyWrongLastSequenceError:
                continue  # another newer task asked it already: ask the next oldest
            except Exception as exc:
                log.warning("concurrency.cancel_failed", task_id=oldest.task_id, error=str(exc))
                return
            log.info(
                "task.concurrency_cancelling",
                task_id=oldest.task_id,
                by=env.id,
                concurrency_key=env.concurrency_key,
            )
            return

    def _remember(self, where: set[str], task_id: str) -> None:
        if len(where) >= _MAX_REMEMBERED:
            where.clear()
        where.add(task_id)

    async def _on_notice(self, msg: Any) -> None:
        task_id = cancelled_task_id(msg.subject[len(_SUBJECT) :])
        if task_id is None or (msg.headers or {}).get(_OP):
            return
        notice = decode_notice(bytes(msg.data))
        if notice is None or notice.task_id != task_id:
            log.warning("concurrency.bad_cancel_notice", subject=msg.subject)
            return
        running = self._running.get(task_id)
        if running is None:
            if len(self._notices) >= _MAX_REMEMBERED:
                self._notices.clear()
            self._notices[task_id] = notice  # it may be between its slot and its start
            return
        held, ctx, task = running
        self._stop(held, ctx, task, notice)

    def _stop(
        self, held: SlotHeld, ctx: Context, task: asyncio.Task[Any] | None, notice: CancelNotice
    ) -> None:
        if held.superseded_by or notice.key != held.record.key:
            return
        held.superseded_by = notice.by
        ctx.revoked = True  # a sync handler sees it through ctx.check_revoked()
        log.info("task.superseded", task_id=held.record.task_id, by=notice.by)
        if task is not None:
            task.cancel()


async def _note(ctx: Context, note: str) -> None:
    """A progress note for ``ebind task get`` and the Future; never fails the delivery."""
    try:
        await ctx.progress(0.0, note=note)
    except Exception as exc:
        log.debug("concurrency.note_failed", task_id=ctx.task_id, error=str(exc))


async def list_slots(js: Any) -> list[SlotRow]:
    """Every taken concurrency slot in the bucket, sorted by task, key and slot."""
    from ebind.workflow._kvread import list_last

    prefix = f"$KV.{KV_LEASES}."
    # Only our keys, read in one batched direct get; freed slots' delete markers are skipped.
    found = await list_last(js, f"KV_{KV_LEASES}", f"{prefix}{SLOT_PREFIX}>")
    now = time.time()
    rows: list[SlotRow] = []
    for m in found:
        row = slot_row(m.subject[len(prefix) :], m.data, now)
        if row is not None:
            rows.append(row)
    return sorted(rows, key=lambda r: (r.task_name, r.key, r.slot, r.bucket_key))
