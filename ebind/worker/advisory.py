"""The delivery backstop: a finite ``max_deliver`` on every ebind durable, and its advisory.

Every task durable (``ebind-t-*`` lanes, ``ebind-targets-*``) and the scheduler's event
durable stop delivering a message after :data:`TASK_MAX_DELIVER` / :data:`EVENT_MAX_DELIVER`
deliveries, whatever went wrong (a message that kills every worker that takes it, an
unlimited retry policy, a DLQ that cannot be written). The server then publishes an
advisory on ``$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>``; every
worker listens, and :class:`MaxDeliveriesWatcher` turns it into a dead letter of kind
``max_deliveries`` holding the message's raw bytes (read back by sequence), answers a
waiting caller, and deletes the message from its work-queue stream so nothing leaves
without a trace. Several workers get each advisory: the DLQ publish carries the same
``Nats-Msg-Id`` the worker uses for that message, so the stream keeps one entry, and a
worker that finds the message already gone does nothing.

:func:`parse_advisory` and :func:`exhausted_entry` are pure; the watcher does the IO.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from ebind.dlq import publish_dead_letter
from ebind.expirer import stored_header_block
from ebind.logging import get_logger
from ebind.queues import LANE_DURABLE_PREFIX
from ebind.streams import (
    DAG_EVENTS_STREAM,
    SCHEDULER_DURABLE,
    TASKS_STREAM,
    WORKER_DURABLE,
    delete_message,
    dlq_subject,
)
from ebind.validate import admit_signed
from ebind.wire import DLQEntry, ErrorKind, TaskEnvelope, TaskError
from ebind.worker.runner import _raw_subject_name

if TYPE_CHECKING:
    from ebind.signing import Signer

__all__ = [
    "ADVISORY_PREFIX",
    "EVENT_MAX_DELIVER",
    "TASK_MAX_DELIVER",
    "Exhausted",
    "MaxDeliveriesWatcher",
    "exhausted_entry",
    "parse_advisory",
]

log = get_logger("ebind.worker")

TASK_MAX_DELIVER = 1000
"""Deliveries after which the task durables stop delivering a message (see docs/security.md).

A retry policy's ``maximum_attempts`` is effectively capped a few deliveries below this
(unknown-name and hook naks also count), and ``maximum_attempts=0`` ("unlimited") means
"until this many deliveries". With the default 60 s maximum interval that is over 16 hours
of retries, the same scale as the task stream's retention.
"""
EVENT_MAX_DELIVER = 1000
"""Deliveries after which the scheduler's event durable stops delivering an event; the
reconciliation sweep re-derives whatever a dropped event would have triggered."""
ADVISORY_PREFIX = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
WATCHED_STREAMS = (TASKS_STREAM, DAG_EVENTS_STREAM)
_TARGET_DURABLE_PREFIX = "ebind-targets-"
# Subjects the watched durables consume (schedules and not-yet-due tasks share the stream).
_CONSUMED_PREFIXES = {
    TASKS_STREAM: ("TASKS.", "TASKS_TARGET.", "TASKQ."),
    DAG_EVENTS_STREAM: ("DAG.",),
}
DLQ_PUBLISH_TIMEOUT = 5.0
MAX_ADVISORY_BYTES = 4096
"""Advisories are small JSON documents; anything larger is not one."""


@dataclass(frozen=True, slots=True)
class Exhausted:
    """One max-deliveries advisory: which message ran out of deliveries, and where."""

    stream: str
    consumer: str
    stream_seq: int
    deliveries: int


class _Advisory(msgspec.Struct, frozen=True):
    stream: str
    consumer: str
    stream_seq: int
    deliveries: int = 0


_advisory_dec = msgspec.json.Decoder(_Advisory)


def parse_advisory(data: bytes) -> Exhausted | None:
    """The advisory in ``data`` if it names a watched stream and a real sequence, else None."""
    if len(data) > MAX_ADVISORY_BYTES:
        return None
    try:
        adv = _advisory_dec.decode(data)
    except Exception:  # not an advisory: ignored, never fatal
        return None
    if adv.stream not in WATCHED_STREAMS or adv.stream_seq <= 0:
        return None
    if adv.consumer not in (WORKER_DURABLE, SCHEDULER_DURABLE) and not adv.consumer.startswith(
        (_TARGET_DURABLE_PREFIX, LANE_DURABLE_PREFIX)
    ):
        return None  # another application's consumer on the stream: not ebind's to settle
    return Exhausted(adv.stream, adv.consumer, adv.stream_seq, max(adv.deliveries, 0))


def exhausted_entry(
    ex: Exhausted,
    subject: str,
    data: bytes,
    now: datetime,
    *,
    headers: Mapping[str, str] | None = None,
    signer: Signer | None = None,
    raw_headers: bytes = b"",
) -> tuple[str, DLQEntry, TaskEnvelope | None]:
    """The DLQ subject name, the entry, and the envelope to answer (None: nobody to answer).

    The envelope is kept (and answered) only when a worker would accept the message,
    its signature included when ``signer`` is set.
    """
    from ebind.workflow.event_check import EVENTS_DLQ_NAME

    error = TaskError(
        kind=ErrorKind.MAX_DELIVERIES.value,
        message=(
            f"the server stopped delivering this message after {ex.deliveries} deliveries "
            f"(max_deliver of consumer {ex.consumer} on {ex.stream})"
        ),
        retryable=False,
    )
    env: TaskEnvelope | None = None
    if ex.stream == TASKS_STREAM:
        admitted = admit_signed(subject, data, headers, signer)
        if isinstance(admitted, TaskEnvelope):
            env = msgspec.structs.replace(admitted, attempt=ex.deliveries)
        name = env.name if env is not None else _raw_subject_name(subject)
    else:
        name = EVENTS_DLQ_NAME
    entry = DLQEntry(
        error=error,
        final_attempt=ex.deliveries,
        dead_lettered_at=now,
        task=env,
        raw=data,
        subject=subject,
        raw_headers=raw_headers if env is None else b"",
    )
    return name, entry, env


Answer = Callable[[TaskEnvelope, TaskError], Awaitable[bool]]


class MaxDeliveriesWatcher:
    """Subscribes to max-deliveries advisories of ebind's streams and dead-letters each one.

    Args:
        app: the connected App (``nc``, ``js``).
        answer: publishes a failure response to a task's validated reply subject.
    """

    def __init__(self, app: Any, answer: Answer) -> None:
        self._app = app
        self._answer = answer
        self._subs: list[Any] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Subscribe to the advisories of the task and DAG-event streams."""
        for stream in WATCHED_STREAMS:
            self._subs.append(
                await self._app.nc.subscribe(f"{ADVISORY_PREFIX}.{stream}.*", cb=self._on_msg)
            )

    async def stop(self) -> None:
        """Unsubscribe and let advisories already being handled finish (bounded)."""
        subs, self._subs = self._subs, []
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=DLQ_PUBLISH_TIMEOUT)

    async def _on_msg(self, msg: Any) -> None:
        ex = parse_advisory(msg.data)
        if ex is None:
            log.warning("worker.advisory_ignored", subject=msg.subject, size=len(msg.data))
            return
        task = asyncio.get_running_loop().create_task(self.handle(ex))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def handle(self, ex: Exhausted) -> None:
        """Dead-letter the message ``ex`` names, answer its caller, delete it (idempotent)."""
        from nats.js.errors import NotFoundError

        js = self._app.js
        try:
            raw = await js.get_msg(ex.stream, ex.stream_seq)
        except NotFoundError:
            return  # another worker handled it already (or it was acked meanwhile)
        except Exception as exc:
            log.error(
                "worker.advisory_read_failed", stream=ex.stream, seq=ex.stream_seq, error=repr(exc)
            )
            return
        subject, data = str(raw.subject), bytes(raw.data or b"")
        if not subject.startswith(_CONSUMED_PREFIXES[ex.stream]):
            # Not a message an ebind durable delivers (a periodic schedule, a countdown
            # task not yet due): an advisory naming it is not the server's, leave it be.
            log.warning("worker.advisory_ignored", stream=ex.stream, seq=ex.stream_seq)
            return
        name, entry, env = exhausted_entry(
            ex,
            subject,
            data,
            datetime.now(UTC),
            headers=raw.headers,
            signer=getattr(self._app, "signer", None),
            raw_headers=stored_header_block(raw),
        )
        try:
            # The message id every delivery of this message uses for its dead letter.
            msg_id = f"{subject}:{ex.stream_seq}:dlq"
            await publish_dead_letter(
                js, dlq_subject(name), entry, msg_id=msg_id, timeout=DLQ_PUBLISH_TIMEOUT
            )
        except Exception as exc:
            log.error("worker.dlq_publish_failed", task_name=name, error=repr(exc))
            return  # keep the message: an operator still finds it in the stream
        if env is not None and env.reply_to:
            await self._answer(env, entry.error)
        with contextlib.suppress(Exception):
            await delete_message(self._app.nc, ex.stream, ex.stream_seq)
        log.error(
            "task.dead_lettered",
            task_id=env.id if env is not None else None,
            task_name=name,
            attempt=ex.deliveries,
            error_kind=entry.error.kind,
            error=entry.error.message,
            subject=subject,
            stream=ex.stream,
        )
