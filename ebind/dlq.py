"""The dead-letter queue: list, show, requeue and purge entries of EBIND_DLQ.

Entries may hold secrets or personal data from task arguments and error messages; the
stream keeps them 7 days. Reads are message gets by sequence, never a consumer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from ebind.client import HEADER_MSG_ID, message_size
from ebind.errors import (
    DLQEntryNotFound,
    InvalidArguments,
    PayloadTooLarge,
    PublishFailed,
    WorkflowError,
)
from ebind.logging import get_logger
from ebind.streams import (
    DLQ_STREAM,
    TASKS_STREAM,
    check_task_name,
    delete_message,
    dlq_subject,
    purge_stream,
    task_subject,
)
from ebind.validate import envelope_problem
from ebind.wire import DLQEntry, TaskEnvelope, decode_envelope, encoder

if TYPE_CHECKING:
    from ebind.app import App

__all__ = [
    "DeadLetter",
    "DeadLetters",
    "RequeueReport",
    "fit_dead_letter",
    "publish_dead_letter",
    "requeue_msg_id",
]

log = get_logger("ebind.dlq")
_decoder = msgspec.json.Decoder(DLQEntry)
_KEPT_MESSAGE = 1000
"""Characters of the error message an entry keeps when it had to be cut to fit."""


def _described(part: str, data: bytes, detail: str = "") -> str:
    return f"{part}{detail}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}"


def fit_dead_letter(entry: DLQEntry, room: int) -> bytes:
    """``entry`` encoded in at most ``room`` bytes where possible, cutting the largest parts.

    A dead letter the server refuses is no record at all (and a refused publish can close
    the connection), so an entry too large for ``max_payload`` keeps its error, attempt,
    time and subject and loses, in this order until it fits: the raw header block and
    bytes, the task
    envelope, the error message past its first characters. ``left_out`` names each part
    cut with its size and SHA-256, so the original can still be matched.
    """
    data = encoder.encode(entry)
    if len(data) <= room:
        return data
    left = list(entry.left_out)
    for part in ("raw_headers", "raw"):
        value: bytes = getattr(entry, part)
        if value:
            left.append(_described(part, value))
            entry = msgspec.structs.replace(entry, **{part: b""}, left_out=tuple(left))
            data = encoder.encode(entry)
            if len(data) <= room:
                return data
    if entry.task is not None:
        task = entry.task
        left.append(_described("task", encoder.encode(task), f" {task.name[:200]} {task.id[:200]}"))
        entry = msgspec.structs.replace(entry, task=None, left_out=tuple(left))
        data = encoder.encode(entry)
        if len(data) <= room:
            return data
    message = entry.error.message
    if len(message) > _KEPT_MESSAGE:
        left.append(_described("error.message", message.encode()))
        error = msgspec.structs.replace(entry.error, message=message[:_KEPT_MESSAGE] + "…")
        entry = msgspec.structs.replace(entry, error=error, left_out=tuple(left))
        data = encoder.encode(entry)
    return data  # the bare entry: a few hundred bytes, below any max_payload a server takes


async def publish_dead_letter(
    js: Any,
    subject: str,
    entry: DLQEntry,
    *,
    msg_id: str | None,
    timeout: float = 5.0,  # noqa: ASYNC109 - passed on to js.publish
) -> Any:
    """Store ``entry`` on ``subject`` (cut to fit ``max_payload``); returns the PubAck."""
    headers = {HEADER_MSG_ID: msg_id} if msg_id else {}
    limit = int(getattr(getattr(js, "_nc", None), "max_payload", 0) or 1024 * 1024)
    data = fit_dead_letter(entry, limit - message_size(subject, b"", headers))
    return await js.publish(subject, data, timeout=timeout, headers=headers or None)


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def requeue_msg_id(task_id: str, seq: int) -> str:
    """A fresh ``Nats-Msg-Id`` for a requeue, so dedupe does not swallow it."""
    return f"{task_id}:requeue:{seq}"


def _check_requeue(env: TaskEnvelope, seq: int) -> None:
    """Raise InvalidArguments unless a worker would accept ``env`` on its own subject.

    A dead letter is read back from a stream others may write to: its task is published
    only if it passes the checks a worker makes, so its fields never choose a subject no
    worker takes (a wildcard name) or anything a worker would refuse.
    """
    try:
        subject = task_subject(env.name, env.target, env.queue, env.priority)
        problem = envelope_problem(env, subject)
    except ValueError as exc:  # InvalidName and InvalidArguments are ValueErrors too
        problem = str(exc)
    if problem is not None:
        raise InvalidArguments(
            f"dead letter {seq} holds a task no worker would accept ({problem}); nothing was "
            "requeued and the dead letter is kept"
        )


@dataclass(slots=True)
class RequeueReport:
    """What ``requeue_all`` did: the requeued task ids, and the entries left in place."""

    task_ids: list[str] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    """Sequences of undecodable entries (no task to requeue; purge or inspect them)."""
    kept: list[int] = field(default_factory=list)
    """Sequences of DAG steps left in place: not retryable, or their rerun not dispatched."""
    failed: list[tuple[int, str]] = field(default_factory=list)
    """Entries left in place because their task could not be queued: sequence and reason."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One DLQ message: its stream sequence, subject, and the decoded entry."""

    seq: int
    subject: str
    entry: DLQEntry

    @property
    def task(self) -> TaskEnvelope | None:
        """The dead task's envelope (None when the original message was undecodable)."""
        return self.entry.task


class DeadLetters:
    """``app.dlq``: the dead-letter queue of an App's NATS account."""

    def __init__(self, app: App) -> None:
        self._app = app

    def _to_letter(self, raw: Any) -> DeadLetter:
        seq = int(raw.seq)
        try:
            entry = _decoder.decode(raw.data or b"")
        except Exception as exc:  # RecursionError from a deeply nested entry too
            raise DLQEntryNotFound(
                f"DLQ message {seq} is not a dead-letter entry ({exc}); inspect it with "
                "`ebind stream peek EBIND_DLQ`",
                seq=seq,
            ) from exc
        return DeadLetter(seq=seq, subject=str(raw.subject), entry=entry)

    async def list(self, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` entries, oldest first."""
        from nats.js.errors import NotFoundError

        if not _positive_int(limit):
            raise InvalidArguments(f"limit must be a positive integer, got {limit!r}")
        js = self._app.js
        info = await js.stream_info(DLQ_STREAM)
        seq = int(info.state.first_seq or 1)
        out: list[DeadLetter] = []
        while len(out) < limit and info.state.messages:
            try:
                raw = await js.get_msg(DLQ_STREAM, seq=seq, subject="DLQ.>", next=True)
            except NotFoundError:
                break
            try:
                out.append(self._to_letter(raw))
            except DLQEntryNotFound as exc:
                log.warning("dlq.undecodable", seq=raw.seq, error=str(exc))
            seq = int(raw.seq) + 1
        return out

    async def show(self, seq: int) -> DeadLetter:
        """The entry at stream sequence ``seq``; raises DLQEntryNotFound."""
        from nats.js.errors import NotFoundError

        if not _positive_int(seq):
            raise InvalidArguments(f"seq must be a positive integer, got {seq!r}")
        try:
            raw = await self._app.js.get_msg(DLQ_STREAM, seq=seq)
        except NotFoundError as exc:
            raise DLQEntryNotFound(
                f"no dead letter at sequence {seq} in {DLQ_STREAM}; list them with "
                "`await app.dlq.list()` or `ebind dlq ls`",
                seq=seq,
            ) from exc
        return self._to_letter(raw)

    async def requeue(self, seq: int, *, dispatch_timeout: float = 10.0) -> str:
        """Publish the dead task again (attempts reset) and delete the entry; returns its id.

        A DAG step is retried through its DAG instead (``retry_step``), and its entry is
        deleted only once the scheduler dispatched the rerun (within ``dispatch_timeout``).

        Raises:
            DLQEntryNotFound: no entry at ``seq``.
            InvalidArguments: the entry holds no decodable task to requeue.
            RetryRefused: a DAG step that cannot be retried (the entry is kept).
            WorkflowError: a DAG step's rerun was not dispatched in time (entry kept).
        """
        letter = await self.show(seq)
        env = letter.task
        if env is None:
            if letter.entry.left_out:
                raise InvalidArguments(
                    f"dead letter {seq} was too large for the server and its task was left "
                    f"out ({'; '.join(letter.entry.left_out)}); nothing to requeue"
                )
            raise InvalidArguments(
                f"dead letter {seq} holds an undecodable message, not a task; nothing to "
                "requeue (purge it or publish a corrected task)"
            )
        if env.dag_id and env.step_id:
            from ebind.workflow.requeue import requeue_step

            await requeue_step(self._app.workflow, env, seq, wait_for=dispatch_timeout)
            await delete_message(self._app.nc, DLQ_STREAM, seq)
            return env.id
        env = msgspec.structs.replace(env, attempt=0, worker_id="", enqueued_at=datetime.now(UTC))
        _check_requeue(env, seq)
        ack = await self._app.publish_task(env, msg_id=requeue_msg_id(env.id, seq))
        if ack.duplicate:
            await self._check_duplicate(env, seq, int(ack.seq))
        await delete_message(self._app.nc, DLQ_STREAM, seq)
        log.info("dlq.requeued", task_id=env.id, task_name=env.name, seq=seq)
        return env.id

    async def _check_duplicate(self, env: TaskEnvelope, seq: int, task_seq: int) -> None:
        """Raise unless the message the server kept for this requeue's id is this task.

        The server drops a publish whose id it saw within its duplicate window: after an
        earlier requeue of this entry that is fine, but if another message took the id
        first this task was not queued, and its dead letter must stay.
        """
        from nats.js.errors import NotFoundError

        subject = task_subject(env.name, env.target, env.queue, env.priority)
        kept: TaskEnvelope | None = None
        try:
            raw = await self._app.js.get_msg(TASKS_STREAM, seq=task_seq)
            if str(raw.subject) == subject:  # a copy elsewhere would run nowhere
                kept = decode_envelope(raw.data or b"")
        except NotFoundError:
            pass  # already taken by a worker: which message it was is unknown
        except Exception as exc:  # unreadable, or not an envelope: not this task either
            log.info("dlq.duplicate_unreadable", seq=task_seq, error=repr(exc))
        if kept is not None and (kept.id, kept.name, kept.payload) == (
            env.id,
            env.name,
            env.payload,
        ):
            return
        raise PublishFailed(
            f"the server kept another message under the requeue id of dead letter {seq} "
            f"(task {env.id}), or one no longer queued, so this task may not be queued; the "
            "dead letter is kept: check `ebind task get` for the task, and requeue it again "
            "once the stream's duplicate window has passed",
            task_id=env.id,
            subject=subject,
        )

    async def requeue_all(
        self,
        name: str | None = None,
        *,
        up_to: int | None = None,
        on_each: Callable[[int], None] | None = None,
    ) -> RequeueReport:
        """Requeue every entry (of task ``name`` only, if given) up to sequence ``up_to``.

        ``up_to`` defaults to the last entry when called (see :meth:`last_seq`), so
        entries dead-lettered while this runs are left for the next call. Undecodable
        entries stay in place and are listed in the report; an entry someone else
        removes meanwhile is passed over. ``on_each(seq)`` follows each entry (progress).

        Raises:
            InvalidName: ``name`` is not a task name (wildcards would match others).
        """
        from nats.js.errors import NotFoundError

        if name is not None:
            check_task_name(name)
        js = self._app.js
        subject = dlq_subject(name) if name else "DLQ.>"
        info = await js.stream_info(DLQ_STREAM)
        seq = int(info.state.first_seq or 1)
        last = int(info.state.last_seq or 0) if up_to is None else up_to
        report = RequeueReport()
        while seq <= last and info.state.messages:
            try:
                raw = await js.get_msg(DLQ_STREAM, seq=seq, subject=subject, next=True)
            except NotFoundError:
                break
            seq = int(raw.seq) + 1
            if int(raw.seq) > last:
                break
            await self._requeue_one(raw, report)
            if on_each is not None:
                on_each(int(raw.seq))
        log.info(
            "dlq.requeued_all",
            count=len(report.task_ids),
            skipped=len(report.skipped),
            failed=len(report.failed),
        )
        return report

    async def _requeue_one(self, raw: Any, report: RequeueReport) -> None:
        """Requeue one entry into ``report``; an entry that cannot be requeued is kept."""
        try:
            letter = self._to_letter(raw)
        except DLQEntryNotFound as exc:
            log.warning("dlq.undecodable", seq=raw.seq, error=str(exc))
            report.skipped.append(int(raw.seq))
            return
        if letter.task is None:
            report.skipped.append(letter.seq)
            return
        try:
            report.task_ids.append(await self.requeue(letter.seq))
        except DLQEntryNotFound:
            log.info("dlq.requeue_gone", seq=letter.seq)  # removed by someone else meanwhile
        except WorkflowError as exc:
            # A DAG step that cannot be retried, or whose rerun was not dispatched: its
            # entry stays, and the others are still requeued.
            log.warning("dlq.step_not_requeued", seq=letter.seq, error=str(exc))
            report.kept.append(letter.seq)
        except (InvalidArguments, PublishFailed, PayloadTooLarge) as exc:
            # This entry's task cannot be queued (or its publish was not confirmed): it
            # stays, named in the report, and the entries after it are still requeued.
            log.warning("dlq.not_requeued", seq=letter.seq, error=str(exc))
            report.failed.append((letter.seq, str(exc)))

    async def last_seq(self) -> int:
        """Sequence of the newest entry (0 when the DLQ never held one)."""
        return int((await self._app.js.stream_info(DLQ_STREAM)).state.last_seq or 0)

    async def count(self, name: str | None = None) -> int:
        """How many entries there are (of task ``name`` only, if given)."""
        js = self._app.js
        if name is None:
            return int((await js.stream_info(DLQ_STREAM)).state.messages or 0)
        check_task_name(name)
        info = await js.stream_info(DLQ_STREAM, subjects_filter=dlq_subject(name))
        return sum((info.state.subjects or {}).values())

    async def purge(self) -> int:
        """Delete every entry stored when called; returns how many there were.

        Raises:
            PermissionDenied: this NATS user may not purge streams.
        """
        js = self._app.js
        info = await js.stream_info(DLQ_STREAM)
        # Only what was counted: a dead letter stored meanwhile is neither deleted unseen
        # nor left out of the count the caller reports.
        await purge_stream(js, DLQ_STREAM, before=int(info.state.last_seq or 0) + 1)
        count = int(info.state.messages or 0)
        log.info("dlq.purged", count=count)
        return count
