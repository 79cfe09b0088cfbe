"""``ebind stream purge EBIND_TASKS``: queued tasks only, unless more is asked for.

EBIND_TASKS holds three kinds of message: queued tasks, delayed (countdown / eta) tasks not
yet due, and periodic schedules. A purge removes queued tasks by default, says how many of
each kind it removed and kept, and takes ``--delayed`` / ``--schedules`` to remove the others.

A queued or delayed task is work someone may wait for, so each one is removed the way the
expirer removes an expired task: a dead letter of kind ``purged`` with the raw bytes, an
answer to its waiter (only when a worker would have accepted the message), then the delete.
A message a worker holds (delivered, not acked) is running and stays. Periodic schedules are
operator configuration, not work: they go with a plain subject-filtered purge.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ebind.expirer import (
    Delivered,
    Removal,
    deliveries,
    next_task,
    record_removal,
    removal_record,
    stored_header_block,
    was_delivered,
)
from ebind.schedule import HEADER_SCHEDULE_TARGET, SCHEDULED_PREFIX
from ebind.signing import Signer
from ebind.streams import PERIODIC_SUBJECTS, SCHEDULED_SUBJECTS, TASKS_STREAM, subject_matches
from ebind.wire import ErrorKind, TaskError

if TYPE_CHECKING:
    from nats.js.api import RawStreamMsg

__all__ = [
    "CATEGORIES",
    "RECORDED",
    "RUNNING",
    "PurgeReport",
    "delivery_subject",
    "plan",
    "purge_error",
    "purge_record",
    "purge_tasks",
    "render",
    "snapshot",
]

CATEGORIES: dict[str, tuple[str, ...]] = {
    "queued tasks": ("TASKS.>", "TASKS_TARGET.>", "TASKQ.>"),
    "delayed tasks": (SCHEDULED_SUBJECTS,),
    "periodic schedules": (PERIODIC_SUBJECTS,),
}
"""What EBIND_TASKS holds, by the subject filters of each kind."""
RECORDED = ("queued tasks", "delayed tasks")
"""The kinds removed one message at a time, each with a dead letter."""
RUNNING = "running tasks"
"""The kept kind for messages a worker holds while the purge runs."""
_FLAGS = {"delayed tasks": "--delayed", "periodic schedules": "--schedules"}
# Workers keep taking messages during a long purge: how often the view of what they hold
# is read again (one consumer list request), so a task taken meanwhile is seen as running.
_DELIVERIES_EVERY = 64


@dataclass
class PurgeReport:
    """How many messages of each kind were removed and kept, and how many dead letters."""

    removed: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)
    dead_lettered: int = 0

    def as_json(self) -> dict[str, Any]:
        """The report for ``--json``."""
        return {
            "stream": TASKS_STREAM,
            "removed": self.removed,
            "kept": self.kept,
            "dead_lettered": self.dead_lettered,
        }


def plan(*, delayed: bool, schedules: bool) -> tuple[list[str], list[str]]:
    """The kinds to remove and the kinds to keep."""
    remove = ["queued tasks"]
    if delayed:
        remove.append("delayed tasks")
    if schedules:
        remove.append("periodic schedules")
    return remove, [k for k in CATEGORIES if k not in remove]


def render(report: PurgeReport) -> str:
    """``purged 3 queued tasks from EBIND_TASKS (3 dead-lettered ...); kept 1 delayed ...``."""
    removed = ", ".join(f"{n} {kind}" for kind, n in report.removed.items())
    text = f"purged {removed} from {TASKS_STREAM}"
    if report.dead_lettered:
        text += f" ({report.dead_lettered} dead-lettered as purged, see `ebind dlq ls`)"
    kept = [
        f"{n} {kind} ({_FLAGS[kind]} removes them)"
        for kind, n in report.kept.items()
        if kind in _FLAGS
    ]
    if report.kept.get(RUNNING):
        kept.append(f"{report.kept[RUNNING]} {RUNNING} (a worker holds them)")
    if kept:
        text += f"; kept {', '.join(kept)}"
    return text


def purge_error() -> TaskError:
    """The error a purged task is dead-lettered and answered with (not retryable)."""
    return TaskError(
        kind=ErrorKind.PURGED.value,
        message=f"an operator purged the task from {TASKS_STREAM} before it ran",
        retryable=False,
    )


def delivery_subject(subject: str, headers: Mapping[str, str] | None) -> str:
    """Where a worker would receive this message: a delayed task's target, else ``subject``.

    A delayed task is stored under ``TASKS_SCHEDULED.<id>`` and delivered on the subject its
    schedule header names, which is also what its signature covers. The header is only
    taken when it is a queued-task subject; the envelope checks then decide the rest.
    """
    if not subject.startswith(SCHEDULED_PREFIX + "."):
        return subject
    target = (headers or {}).get(HEADER_SCHEDULE_TARGET, "")
    if any(subject_matches(f, target) for f in CATEGORIES["queued tasks"]):
        return target
    return subject


def purge_record(msg: RawStreamMsg, now: datetime, signer: Signer | None = None) -> Removal:
    """The dead letter (and reply, if admitted) for EBIND_TASKS message ``msg``, purged unrun.

    Its ``Nats-Msg-Id`` differs from a worker's or the expirer's dead letter of the same
    message, and a purge tried again after a failure finds its own and stores no second.
    """
    subject = msg.subject or ""
    return removal_record(
        delivery_subject(subject, msg.headers),
        bytes(msg.data or b""),
        purge_error(),
        now,
        msg_id=f"{subject}:{msg.seq}:purged",
        headers=msg.headers,
        signer=signer,
        raw_headers=stored_header_block(msg),
    )


async def snapshot(app: Any, *, delayed: bool) -> tuple[int, int]:
    """How many task messages a purge would go through, and EBIND_TASKS's last sequence now."""
    remove, _ = plan(delayed=delayed, schedules=False)
    total = sum([await _count(app, f) for kind in remove for f in CATEGORIES[kind]])
    return total, await _last_seq(app)


async def purge_tasks(
    app: Any,
    *,
    delayed: bool,
    schedules: bool,
    up_to: int | None = None,
    on_each: Callable[[int], None] | None = None,
) -> PurgeReport:
    """Purge the asked kinds, recording each task; count the kept kinds.

    Tasks are read one by one up to stream sequence ``up_to`` (None: the last one now), so
    what arrives during the purge stays. ``on_each(1)`` is called per task message gone
    through (removed or kept running).
    """
    remove, keep = plan(delayed=delayed, schedules=schedules)
    bound = await _last_seq(app) if up_to is None else up_to
    walk = _Walk(app, bound, on_each or (lambda _n: None))
    report = PurgeReport()
    for kind in remove:
        if kind in RECORDED:
            report.removed[kind] = sum([await walk.purge(f) for f in CATEGORIES[kind]])
        else:
            report.removed[kind] = sum([await _purge(app, f) for f in CATEGORIES[kind]])
    for kind in keep:
        report.kept[kind] = sum([await _count(app, f) for f in CATEGORIES[kind]])
    report.kept[RUNNING] = walk.running
    report.dead_lettered = walk.dead_lettered
    return report


class _Walk:
    """One purge's pass over task messages: what it removed, recorded and kept running."""

    def __init__(self, app: Any, up_to: int, on_each: Callable[[int], None]) -> None:
        self.app = app
        self.up_to = up_to
        self.on_each = on_each
        self.running = 0
        self.dead_lettered = 0
        self._held: list[Delivered] = []
        self._held_age = _DELIVERIES_EVERY  # read on first use

    async def purge(self, subject_filter: str) -> int:
        """Record and delete every message on ``subject_filter`` up to the bound; the count."""
        removed = 0
        seq = 1
        while seq <= self.up_to:
            raw = await next_task(self.app.js, seq, subject_filter)
            if raw is None or int(raw.seq or 0) > self.up_to:
                break
            seq = int(raw.seq or 0) + 1
            subject = raw.subject or ""
            if await self._holds(subject, seq - 1):
                self.running += 1  # a worker runs it (or waits to retry it): it records it
            else:
                record = purge_record(raw, datetime.now(UTC), getattr(self.app, "signer", None))
                gone = await record_removal(self.app, record, seq - 1, event="task.purged")
                self.dead_lettered += 1
                removed += int(gone)
            self.on_each(1)
        return removed

    async def _holds(self, subject: str, seq: int) -> bool:
        if self._held_age >= _DELIVERIES_EVERY:
            self._held = await deliveries(self.app.js)
            self._held_age = 0
        self._held_age += 1
        return was_delivered(self._held, subject, seq)


async def _last_seq(app: Any) -> int:
    return int((await app.js.stream_info(TASKS_STREAM)).state.last_seq or 0)


async def _purge(app: Any, subject_filter: str) -> int:
    from nats.js.errors import APIError

    reply = await app.nc.request(
        f"$JS.API.STREAM.PURGE.{TASKS_STREAM}",
        json.dumps({"filter": subject_filter}).encode(),
        timeout=10,
    )
    doc = json.loads(reply.data)
    if "error" in doc:
        raise APIError.from_error(doc["error"])
    return int(doc.get("purged", 0))


async def _count(app: Any, subject_filter: str) -> int:
    info = await app.js.stream_info(TASKS_STREAM, subjects_filter=subject_filter)
    return sum((info.state.subjects or {}).values())
