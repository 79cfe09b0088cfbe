"""The expirer: tasks nobody takes are dead-lettered as ``expired`` before the server drops them.

A worker checks the horizon of every message it receives, but a message no worker takes
(targeted at a claim nobody holds, or a task name no worker knows) would sit in
EBIND_TASKS until the stream's ``max_age`` deletes it without a trace. One process at a
time (a lease in ``ebind-leases``) looks at the oldest queued messages on each pass and,
for each one past the horizon: writes a dead letter of kind ``expired`` with the raw bytes
(``Nats-Msg-Id`` shared with the worker's own dead letter of that message, so two leaders
or a worker and the expirer store one entry), answers the waiter, then deletes the
message. Periodic schedules and countdown tasks not yet due live on other subjects and
are never expired by age.

The decisions (which message, what record, which reply subject) are pure functions below;
:class:`Expirer` does the IO. A purge of queued tasks (``ebind stream purge EBIND_TASKS``)
records each message it removes with the same two pieces: :func:`removal_record` builds the
record, :func:`record_removal` stores it, answers and deletes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from ebind.crashpoints import crashpoint
from ebind.dlq import publish_dead_letter
from ebind.errors import InvalidName
from ebind.horizon import expirer_interval, grace, horizon_error, is_expired
from ebind.logging import get_logger
from ebind.signing import Signer
from ebind.streams import (
    KV_LEASES,
    RESP_STREAM,
    TASKS_STREAM,
    check_id,
    check_task_name,
    delete_message,
    dlq_subject,
    resp_subject,
    subject_matches,
)
from ebind.validate import admit_signed
from ebind.wire import (
    DLQEntry,
    TaskEnvelope,
    TaskError,
    TaskResponse,
    decode_response,
    encoder,
)

__all__ = [
    "EXPIRED_SUBJECTS",
    "LEASE_KEY",
    "Delivered",
    "Expirer",
    "Removal",
    "answers_run",
    "deliveries",
    "expiry_for",
    "next_task",
    "record_removal",
    "removal_record",
    "reply_subject",
    "was_delivered",
]

log = get_logger("ebind.expirer")

EXPIRED_SUBJECTS = ("TASKS.>", "TASKS_TARGET.>", "TASKQ.>")
"""Subjects of queued tasks; schedules (``TASKS_SCHEDULES``/``TASKS_SCHEDULED``) are not here."""
LEASE_KEY = "expirer"
"""Key of the expirer's lease in ``ebind-leases``."""
MAX_PER_PASS = 1000
"""Messages expired per subject and pass, so one pass never holds the loop for long."""
RECORD_AT_ONCE = 32
"""Expired messages recorded concurrently (each is a dead letter, an answer and a delete)."""
_CONSUMER_PAGE = 256  # consumers per CONSUMER.INFO list page
_ALREADY_GONE = 10057  # JSStreamMsgDeleteFailedF: "no message found" at that sequence


def answers_run(resp: TaskResponse, task: TaskEnvelope | None) -> bool:
    """Whether ``resp`` answers this run of ``task`` (the worker's rule, see its fence)."""
    # Imported here: the worker package imports this module.
    from ebind.worker.fence import answers_run as answers_task_run

    return task is not None and answers_task_run(resp, task)


@dataclass(frozen=True, slots=True)
class Removal:
    """What to record for one message removed unrun: the dead letter, and the reply if any."""

    dlq_subject: str
    entry: DLQEntry
    msg_id: str
    reply_to: str | None
    response: TaskResponse | None


def reply_subject(env: TaskEnvelope) -> str | None:
    """The envelope's ``reply_to`` if it is exactly ``RESP.<client id>.<its own id>``, else None.

    A message names its reply subject itself, so the expirer answers only on the response
    subject of that task's own id under a well-formed client id, never anywhere else.
    """
    parts = env.reply_to.split(".")
    if len(parts) != 3 or parts[0] != "RESP" or parts[2] != env.id:
        return None
    try:
        check_id(parts[1], "client_id")
        check_id(env.id, "task_id")
    except InvalidName:
        return None
    return resp_subject(parts[1], env.id)


def _dlq_name(subject: str, env: TaskEnvelope | None) -> str:
    """The task name part of the dead letter's subject (a valid name, or ``_undecodable``)."""
    candidates = [env.name] if env is not None else []
    if subject.startswith("TASKS_TARGET."):
        candidates.append(subject.split(".", 2)[-1])
    elif subject.startswith("TASKQ."):  # TASKQ.<queue>.<band>.<name>
        candidates.append(subject.split(".", 3)[-1])
    else:
        candidates.append(subject.partition(".")[2])
    for name in candidates:
        with contextlib.suppress(InvalidName):
            return check_task_name(name)
    return "_undecodable"


Delivered = tuple[tuple[str, ...], int]
"""A consumer's filter subjects and the highest stream sequence it has delivered."""


def was_delivered(consumers: list[Delivered], subject: str, seq: int) -> bool:
    """Whether a consumer whose filter takes ``subject`` has already delivered ``seq``.

    On a work-queue stream a delivered message that is still stored is held by a worker
    (running, or waiting for a retry): that worker checks the horizon itself.
    """
    return any(
        last >= seq and any(subject_matches(f, subject) for f in filters)
        for filters, last in consumers
    )


def removal_record(
    subject: str,
    data: bytes,
    error: TaskError,
    now: datetime,
    *,
    msg_id: str,
    headers: Mapping[str, str] | None = None,
    signer: Signer | None = None,
    raw_headers: bytes = b"",
) -> Removal:
    """The dead letter (and reply) for a message removed unrun from ``subject`` with ``error``.

    ``subject`` is where a worker would receive the message. A message a worker would
    refuse (undecodable, failing the envelope checks, or without a valid signature when
    ``signer`` is set) is dead-lettered as raw bytes with no reply, the reason appended to
    the error: nothing such a message says (its reply subject, its name) is used.
    """
    verdict = admit_signed(subject, data, headers, signer)
    env = verdict if isinstance(verdict, TaskEnvelope) else None
    if isinstance(verdict, TaskError):
        error = msgspec.structs.replace(
            error,
            message=f"{error.message}; kept as raw bytes only ({verdict.kind}): {verdict.message}",
        )
    entry = DLQEntry(
        error=error,
        final_attempt=0,
        dead_lettered_at=now,
        task=env,
        raw=data,
        subject=subject,
        # A refused message is kept whole: its header block too (a signature, say).
        raw_headers=raw_headers if env is None else b"",
    )
    reply = reply_subject(env) if env is not None else None
    response = (
        TaskResponse(
            task_id=env.id, error=error, attempts=0, completed_at=now, token=env.reply_token
        )
        if env is not None and reply is not None
        else None
    )
    return Removal(
        dlq_subject=dlq_subject(_dlq_name(subject, env)),
        entry=entry,
        msg_id=msg_id,
        reply_to=reply,
        response=response,
    )


def expiry_for(
    subject: str,
    seq: int,
    data: bytes,
    stored_at: datetime,
    horizon: float,
    now: datetime,
    *,
    delivered: bool = False,
    headers: Mapping[str, str] | None = None,
    signer: Signer | None = None,
    raw_headers: bytes = b"",
) -> Removal | None:
    """The record for stream message ``seq`` if it is past ``horizon`` at ``now``, else None.

    ``stored_at`` is when the stream stored the message (a countdown task: when it fell
    due). A message a worker already received gets half the grace margin more, so a
    handler running across the horizon ends (and the worker records it) first. The record
    itself is :func:`removal_record`'s, of kind ``expired``.
    """
    allowance = grace(horizon) / 2 if delivered else 0.0
    if not is_expired(stored_at, horizon + allowance, now):
        return None
    return removal_record(
        subject,
        data,
        horizon_error(stored_at, horizon),
        now,
        # The worker's dead letter of the same message carries the same id (outcome_msg_id).
        msg_id=f"{subject}:{seq}:dlq",
        headers=headers,
        signer=signer,
        raw_headers=raw_headers,
    )


def stored_header_block(raw: Any) -> bytes:
    """The header block of a message read with a stream message get (empty without one)."""
    hdrs = getattr(raw, "hdrs", None)
    if not hdrs:
        return b""
    try:
        return base64.b64decode(hdrs)
    except (ValueError, TypeError):
        return b""


async def next_task(js: Any, seq: int, filter_subject: str) -> Any:
    """The first EBIND_TASKS message at or after ``seq`` on ``filter_subject`` (None: none)."""
    from nats.js.errors import NotFoundError

    try:
        return await js.get_msg(TASKS_STREAM, seq=seq, subject=filter_subject, next=True)
    except NotFoundError:
        return None


async def tasks_from(js: Any, seq: int, filter_subject: str, ahead: int) -> list[Any]:
    """EBIND_TASKS messages on ``filter_subject`` from ``seq`` on, in order, read ``ahead`` at once.

    Each of the ``ahead`` reads asks for the first message at or after one sequence of
    ``seq .. seq + ahead - 1``: a dense run of queued tasks (a burst) comes back whole in
    one round trip, and a gap only repeats a message, which is dropped. An empty list: none.
    """
    got = await asyncio.gather(*(next_task(js, seq + i, filter_subject) for i in range(ahead)))
    unique = {int(m.seq): m for m in got if m is not None}
    return [unique[k] for k in sorted(unique)]


async def deliveries(js: Any) -> list[Delivered]:
    """Every EBIND_TASKS consumer's filters and last delivered stream sequence."""
    out: list[Delivered] = []
    offset = 0
    while True:
        page = await js.consumers_info(TASKS_STREAM, offset=offset)
        for info in page:
            config = info.config
            filters = tuple(config.filter_subjects or ()) or (config.filter_subject or ">",)
            out.append((filters, int(info.delivered.stream_seq if info.delivered else 0)))
        if len(page) < _CONSUMER_PAGE:
            return out
        offset += len(page)


async def _answered(app: Any, reply_to: str | None, task: TaskEnvelope | None) -> bool:
    """Whether EBIND_RESP already holds the answer to this run of ``task``.

    A direct get, as the worker's own check: the permissions a scheduler worker holds
    allow it. Any trouble reading means "no": answering twice beats not answering.
    """
    from ebind._jsreq import requests_for

    if reply_to is None:
        return False
    try:
        got = await requests_for(app.nc).get_last(RESP_STREAM, reply_to)
        return got is not None and answers_run(decode_response(got.data), task)
    except Exception as exc:
        log.info("expirer.answered_check_failed", subject=reply_to, error=repr(exc))
        return False


async def record_removal(
    app: Any,
    plan: Removal,
    seq: int,
    *,
    event: str,
    before_delete: Callable[[], None] | None = None,
) -> bool:
    """Dead letter (awaited), reply, then delete EBIND_TASKS ``seq``; False if already gone.

    The order keeps the record ahead of the removal: a failure before the delete leaves
    the message in place, and trying again stores no second dead letter (same msg id) and
    no second answer. ``event`` names the log line of a removal (``task.expired``).
    """
    from nats.js.errors import APIError, NotFoundError

    js = app.js
    ack = await publish_dead_letter(js, plan.dlq_subject, plan.entry, msg_id=plan.msg_id)
    # A duplicate dead letter means this message was recorded before (by a worker, or
    # a remover that died before its delete): answer only if that one did not.
    answered = ack.duplicate and await _answered(app, plan.reply_to, plan.entry.task)
    if plan.reply_to is not None and plan.response is not None and not answered:
        await app.publish_response(plan.reply_to, encoder.encode(plan.response))
    if before_delete is not None:
        before_delete()
    try:
        await delete_message(app.nc, TASKS_STREAM, seq)
    except APIError as exc:
        if not isinstance(exc, NotFoundError) and exc.err_code != _ALREADY_GONE:
            raise
        return False  # a worker took it, or another remover recorded and deleted it first
    task = plan.entry.task
    log.warning(
        event,
        task_id=task.id if task else None,
        task_name=task.name if task else None,
        subject=plan.entry.subject,
        seq=seq,
        error=plan.entry.error.message,
    )
    return True


class Expirer:
    """Dead-letters queued tasks past the horizon while this process holds the expirer lease.

    Args:
        app: a connected :class:`ebind.App` (its ``tasks_horizon`` is the horizon).
        interval: seconds between passes; None derives it from the horizon (0.5 s to 60 s).
        lease_ttl: lifetime of the lease; another process takes over this long after a crash.
    """

    def __init__(self, app: Any, *, interval: float | None = None, lease_ttl: float = 10.0) -> None:
        self.app = app
        self.interval = interval
        self.lease_ttl = lease_ttl
        self.expired = 0
        """Messages this process dead-lettered as expired (a counter for metrics)."""
        self.behind = False
        """Whether the last pass stopped at its cap with expired messages left."""
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """Hold (or wait for) the lease and expire on every pass until :meth:`stop`."""
        from ebind._aio import wait_event
        from ebind.workflow.leader import KVLeaseElector

        elector = KVLeaseElector(
            self.app.js, KV_LEASES, LEASE_KEY, ttl=self.lease_ttl, replicas=self.app.replicas
        )
        lease = asyncio.create_task(elector.run(), name="ebind-expirer-lease")
        try:
            while not self._stop.is_set():
                if elector.is_leader():
                    try:
                        await self.sweep()
                    except Exception as exc:  # the server may be away: try again next pass
                        self.behind = False
                        log.warning("expirer.pass_failed", error=repr(exc))
                    if self.behind:
                        continue  # more expired messages wait: the next pass now
                interval = self.interval or expirer_interval(self.app.tasks_horizon)
                await wait_event(self._stop, interval)
        finally:
            await elector.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(lease), 2.0)
            if not lease.done():
                lease.cancel()

    async def stop(self) -> None:
        """End :meth:`run` after its current pass."""
        self._stop.set()

    async def sweep(self) -> int:
        """One pass over the oldest queued messages; returns how many were expired.

        Messages are read in stream order, ``RECORD_AT_ONCE`` at a time, and each such
        page is recorded concurrently. When a subject still holds expired messages after
        ``MAX_PER_PASS`` of them, :attr:`behind` is set and :meth:`run` starts the next
        pass at once: a burst nobody serves must be recorded before the server's max age
        deletes it, however large.
        """
        horizon = float(self.app.tasks_horizon)
        consumers: list[Delivered] | None = None  # read only once something is old
        signer = getattr(self.app, "signer", None)
        done = 0
        self.behind = False
        for subject in EXPIRED_SUBJECTS:
            seq, batch, seen, recorded = 1, [], 0, 0
            young = False
            while seen < MAX_PER_PASS and not young:
                page = await tasks_from(self.app.js, seq, subject, RECORD_AT_ONCE)
                if not page:
                    break
                for raw in page:
                    seq = int(raw.seq or 0) + 1
                    stored_at = raw.time or datetime.now(UTC)
                    if not is_expired(stored_at, horizon, datetime.now(UTC)):
                        young = True  # stream order: everything after is younger
                        break
                    if consumers is None:
                        consumers = await deliveries(self.app.js)
                    plan = expiry_for(
                        raw.subject or "",
                        seq - 1,
                        bytes(raw.data or b""),
                        stored_at,
                        horizon,
                        datetime.now(UTC),
                        delivered=was_delivered(consumers, raw.subject or "", seq - 1),
                        headers=raw.headers,
                        signer=signer,
                        raw_headers=stored_header_block(raw),
                    )
                    if plan is not None:  # None: a worker holds it, inside its allowance
                        batch.append((plan, seq - 1))
                        seen += 1
                recorded += await self._record_all(batch)
                batch = []
            done += recorded
            if seen >= MAX_PER_PASS and not young and recorded:
                # The cap, not the young end, ended this subject, and the pass moved on:
                # the next one goes at once (one that records nothing waits its interval).
                self.behind = True
        if done:
            self.expired += done
            log.warning("expirer.expired", count=done, horizon=horizon)
        if self.behind:
            log.warning("expirer.behind", per_pass=MAX_PER_PASS, horizon=horizon)
        return done

    async def _record_all(self, batch: list[tuple[Removal, int]]) -> int:
        """Record ``batch`` concurrently; how many were recorded.

        One message that cannot be recorded must not hold back the others (the stream's
        max age would remove those unrecorded): it stays in the stream and is tried again
        on the next pass. A transient error (the server away) is raised once the batch
        settled, ending the pass: every later message would wait as long.
        """
        # Imported here: the workflow package imports the worker, which imports this.
        from ebind.workflow._transient import is_transient

        outcomes = await asyncio.gather(
            *(
                record_removal(
                    self.app,
                    plan,
                    seq,
                    event="task.expired",
                    before_delete=lambda: crashpoint("expirer.before_delete"),
                )
                for plan, seq in batch
            ),
            return_exceptions=True,
        )
        transient: BaseException | None = None
        for (_, seq), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception) or is_transient(outcome):
                    transient = transient or outcome
                else:
                    log.error("expirer.record_failed", seq=seq, error=repr(outcome))
        if transient is not None:
            raise transient
        return sum(1 for o in outcomes if not isinstance(o, BaseException))
