"""What is queued and who works on it: the data behind ``ebind queue ls`` and ``ebind worker ls``.

Queues are read from the server itself (per-subject message counts of ``EBIND_TASKS``, the
first message of each subject, the lane durables), so a task no running worker can handle
is visible with its count and age. Workers are read from the record each running worker
rewrites every few seconds (``workers.<b64(worker_id)>`` in ``ebind-leases``, removed by
the server a few intervals after the worker stops). Both are untrusted input: a record
that does not decode, or names an invalid id, is counted as unreadable and not shown.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from ebind.errors import InvalidName
from ebind.logging import get_logger
from ebind.queues import BANDS, LANE_DURABLE_PREFIX, LANE_SUBJECTS, band_rank, parse_subject
from ebind.streams import KV_LEASES, TASKS_STREAM, b64_token, check_id, check_target

__all__ = [
    "WORKER_RECORD_PREFIX",
    "QueueRow",
    "WorkerRecord",
    "WorkerRow",
    "decode_worker_record",
    "lane_consumers",
    "queue_depths",
    "queue_rows",
    "worker_key",
    "worker_rows",
]

log = get_logger("ebind.inspect")

WORKER_RECORD_PREFIX = "workers."
"""Key prefix of worker records in the leases bucket."""
MAX_RECORD_BYTES = 16 * 1024
"""A worker record larger than this is not read (a record lists a few names)."""
_CONSUMER_PAGE = 256


class WorkerRecord(msgspec.Struct, kw_only=True, frozen=True):
    """What a running worker publishes about itself every few seconds."""

    worker_id: str
    queues: list[str] = []
    claims: list[str] = []
    concurrency: int = 0
    in_flight: int = 0
    held: int = 0
    leader: bool = False
    host: str = ""
    pid: int = 0
    started_at: float = 0.0
    at: float = 0.0


class WorkerRow(msgspec.Struct, kw_only=True, frozen=True):
    """One line of ``ebind worker ls``."""

    worker_id: str
    queues: list[str]
    claims: list[str]
    concurrency: int
    in_flight: int
    leader: bool
    host: str
    pid: int
    heartbeat_age: float
    """Seconds since the worker last rewrote its record (by the writer's clock)."""


class QueueRow(msgspec.Struct, kw_only=True, frozen=True):
    """One line of ``ebind queue ls``: a lane (queue, band, task)."""

    queue: str
    band: str
    task: str
    depth: int
    oldest_age: float | None
    """Seconds the oldest waiting message has been queued (None when empty)."""
    consumer: bool
    """Whether a lane durable exists (some worker with the handler served the lane)."""
    pulls: int
    """Pull requests open on it: workers waiting for its messages right now."""
    unacked: int
    """Messages delivered and not yet acknowledged (running)."""


def worker_key(worker_id: str) -> str:
    """The leases-bucket key of ``worker_id``'s record."""
    return f"{WORKER_RECORD_PREFIX}{b64_token(worker_id)}"


_record_dec = msgspec.json.Decoder(WorkerRecord)


_PLAUSIBLE_TIME = (0.0, 1e11)
"""Unix seconds a worker record's times may hold: not negative, and not so far off that
an age computed from them overflows (1e11 s is past the year 5000)."""


def decode_worker_record(data: bytes) -> WorkerRecord | None:
    """The record in ``data`` when it decodes and its names are valid, else None."""
    if len(data) > MAX_RECORD_BYTES:
        return None
    try:
        rec = _record_dec.decode(data)
        check_target(rec.worker_id)
        for q in rec.queues:
            check_id(q, "queue")
        for c in rec.claims:
            check_target(c)
    except (msgspec.ValidationError, msgspec.DecodeError, InvalidName):
        return None
    if min(rec.concurrency, rec.in_flight, rec.held, rec.pid) < 0:
        return None
    # Times are Unix seconds a worker wrote (NaN fails the comparison too).
    low, high = _PLAUSIBLE_TIME
    if not all(low <= t <= high for t in (rec.at, rec.started_at)):
        return None
    return rec


async def worker_rows(js: Any, now: float | None = None) -> tuple[list[WorkerRow], int]:
    """Every live worker's row (sorted by id) and how many records were unreadable."""
    from nats.js.errors import NotFoundError

    now = time.time() if now is None else now
    rows: list[WorkerRow] = []
    bad = 0
    from ebind.workflow._kvread import list_last

    prefix = f"$KV.{KV_LEASES}."
    try:
        # Every current record in one batched direct get (deleted ones are skipped).
        entries = await list_last(js, f"KV_{KV_LEASES}", f"{prefix}{WORKER_RECORD_PREFIX}>")
    except NotFoundError:
        return [], 0
    for entry in entries:
        key = entry.subject[len(prefix) :]
        rec = decode_worker_record(entry.data)
        if rec is None or worker_key(rec.worker_id) != key:
            bad += 1  # a record must sit under its own worker's key
            continue
        rows.append(
            WorkerRow(
                worker_id=rec.worker_id,
                queues=rec.queues,
                claims=rec.claims,
                concurrency=rec.concurrency,
                in_flight=rec.in_flight,
                leader=rec.leader,
                host=rec.host,
                pid=rec.pid,
                heartbeat_age=max(0.0, now - rec.at),
            )
        )
    return sorted(rows, key=lambda r: r.worker_id), bad


async def lane_consumers(js: Any) -> list[Any]:
    """ConsumerInfo of every lane durable on ``EBIND_TASKS``."""
    out: list[Any] = []
    offset = 0
    while True:
        page = await js.consumers_info(TASKS_STREAM, offset=offset)
        out += [i for i in page if str(i.name or "").startswith(LANE_DURABLE_PREFIX)]
        if len(page) < _CONSUMER_PAGE:
            return out
        offset += len(page)


async def _subject_counts(js: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for pattern in LANE_SUBJECTS:
        info = await js.stream_info(TASKS_STREAM, subjects_filter=pattern)
        counts.update(info.state.subjects or {})
    return counts


async def _oldest_age(js: Any, subject: str, now: datetime) -> float | None:
    from nats.js.errors import NotFoundError

    try:
        raw = await js.get_msg(TASKS_STREAM, seq=1, subject=subject, next=True)
    except NotFoundError:
        return None
    stored = raw.time
    return max(0.0, (now - stored).total_seconds()) if stored is not None else None


async def queue_rows(js: Any, now: datetime | None = None) -> list[QueueRow]:
    """A row per lane holding messages or having a durable, by queue, task, then band."""
    now = now or datetime.now(UTC)
    counts = await _subject_counts(js)
    consumers: dict[str, Any] = {}
    for info in await lane_consumers(js):
        subject = str(info.config.filter_subject or "")
        if parse_subject(subject) is not None:
            consumers[subject] = info
    rows: list[QueueRow] = []
    for subject in sorted(set(counts) | set(consumers)):
        parsed = parse_subject(subject)
        if parsed is None:
            continue  # not a lane (a name only an operator could have published)
        queue, band, task = parsed
        depth = int(counts.get(subject, 0))
        info = consumers.get(subject)
        rows.append(
            QueueRow(
                queue=queue,
                band=band,
                task=task,
                depth=depth,
                oldest_age=await _oldest_age(js, subject, now) if depth else None,
                consumer=info is not None,
                pulls=int(getattr(info, "num_waiting", 0) or 0),
                unacked=int(getattr(info, "num_ack_pending", 0) or 0),
            )
        )
    rows.sort(key=lambda r: (r.queue, r.task, band_rank(r.band)))
    return rows


async def queue_depths(js: Any) -> dict[tuple[str, str], int]:
    """Untargeted tasks waiting per (queue, band): one stream read per subject family.

    Every band of a queue seen is present (0 when empty), so a gauge drops to zero
    instead of vanishing when a band drains.
    """
    out: dict[tuple[str, str], int] = {}
    for subject, count in (await _subject_counts(js)).items():
        parsed = parse_subject(subject)
        if parsed is None:
            continue
        queue, band, _ = parsed
        for b in BANDS:
            out.setdefault((queue, b), 0)
        out[(queue, band)] += int(count)
    return out
