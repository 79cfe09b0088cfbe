"""Periodic tasks on JetStream message schedules: the server fires them, no beat.

``await app.schedule("report", send_report, every=timedelta(hours=1))`` stores one message
on ``TASKS_SCHEDULES.<name>`` in EBIND_TASKS carrying the task envelope and the headers
``Nats-Schedule: @every 3600s`` (or a cron expression), ``Nats-Schedule-Target: <task
subject>`` and ``Nats-TTL: never``. On every tick the stream leader copies the envelope to
the task subject, where exactly one worker consumes it (work-queue retention), so a tick
runs once however many workers run, and the schedule survives restarts of every process.

Facts checked against nats-server 2.15.1, each behind a choice made here:

- One schedule per subject (the server stores it as a ``sub`` rollup): re-creating a name
  replaces it; purging the subject removes it.
- The stream's 24 h ``max_age`` would delete the schedule message and silently stop the
  schedule, so it carries ``Nats-TTL: never`` (EBIND_TASKS has ``allow_msg_ttl``). The
  server strips ``Nats-TTL`` and ``Nats-Msg-Id`` from fired copies, which therefore expire
  like any task.
- No ``Nats-Msg-Id`` on the schedule: inside the duplicate window it would turn a
  re-create into a silent no-op.
- Cron needs 6 fields (seconds first); 5-field expressions are accepted here and get a
  leading ``0``. Predefined ``@hourly``-style names are lowercase only. ``@every`` needs at
  least 1 s. ``Nats-Schedule-Time-Zone`` (IANA name) applies to cron only.
- A fired copy keeps the schedule's body, so every firing carries the same envelope id;
  the worker calls :func:`firing_envelope` to give each firing the id ``<name>-<stream
  sequence>`` (stable across redeliveries of that firing, unique across firings).

Validation (:func:`plan_schedule`, with the cron grammar in :mod:`ebind.cron`) is pure; the
``async`` functions at the end publish, and ``App.schedule`` / ``schedules`` /
``unschedule`` delegate to them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from ebind._denied import guarded
from ebind.client import message_size
from ebind.cron import every_header, parse_cron, parse_go_duration
from ebind.errors import InvalidArguments, PayloadTooLarge, PermissionDenied, PublishFailed
from ebind.payload import PayloadCodec, seal
from ebind.signing import HEADER_SIGNATURE, Signer
from ebind.streams import (
    TASKS_STREAM,
    check_id,
    check_target,
    check_task_name,
    purge_stream,
    task_subject,
)
from ebind.validate import too_deep
from ebind.wire import TaskEnvelope, decode_envelope, encoder

if TYPE_CHECKING:
    from ebind.signature import HandlerSpec

__all__ = [
    "HEADER_SCHEDULER",
    "HEADER_TIME_ZONE",
    "SCHEDULES_PREFIX",
    "SCHEDULES_SUBJECTS",
    "ScheduleInfo",
    "SchedulePlan",
    "create_schedule",
    "firing_envelope",
    "list_schedules",
    "plan_schedule",
    "planted_repeat",
    "remove_schedule",
    "schedule_subject",
]

SCHEDULES_PREFIX = "TASKS_SCHEDULES"
SCHEDULES_SUBJECTS = f"{SCHEDULES_PREFIX}.>"
HEADER_SCHEDULE = "Nats-Schedule"
HEADER_TARGET = "Nats-Schedule-Target"
HEADER_TIME_ZONE = "Nats-Schedule-Time-Zone"
HEADER_SCHEDULER = "Nats-Scheduler"
_SCHEDULER_NAME = HEADER_SCHEDULER.encode()
HEADER_TTL = "Nats-TTL"
HEADER_CRON_WRITTEN = "Ebind-Cron"
"""The cron expression as the user wrote it (the server gets a normalised 6-field form)."""


HEADER_SCHEDULE_NEXT = "Nats-Schedule-Next"
"""Set by the server on a firing: the next firing's time, or ``purge`` for a one-shot."""


def planted_repeat(msg: Any) -> str | None:
    """The subject of a repeating schedule outside ``TASKS_SCHEDULES`` that fired ``msg``.

    ebind makes repeating schedules only on ``TASKS_SCHEDULES.<name>``, where ``ebind
    schedule ls`` shows them; everywhere else (the countdown subjects, and the task subjects
    producers publish on) it stores one-shot schedules at most. A producer could put a
    repeating schedule on one of those that fires forever and that no listing shows: its
    firings say so (a next firing time, not ``purge``) in headers only the server sets.
    None for anything else.
    """
    raw = getattr(msg, "raw_headers", None)
    if raw is not None and _SCHEDULER_NAME not in raw:
        return None  # the cheap common case: not a firing at all
    headers = msg.headers
    if not headers:
        return None
    scheduler = headers.get(HEADER_SCHEDULER, "")
    if not scheduler or scheduler.startswith(SCHEDULES_PREFIX + "."):
        return None  # not a firing, or a listed periodic schedule
    if headers.get(HEADER_SCHEDULE_NEXT, "purge") == "purge":
        return None  # a one-shot: removed by the server once it fired
    return str(scheduler)


def schedule_subject(name: str) -> str:
    """``TASKS_SCHEDULES.<name>``: the subject holding the schedule called ``name``."""
    return f"{SCHEDULES_PREFIX}.{check_id(name, 'schedule name')}"


def _zone(tz: str | None, cron: str | None) -> tzinfo:
    if tz is None:
        return UTC
    if cron is None:
        raise InvalidArguments("tz= applies to cron schedules only", parameter="tz")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidArguments(
            f"unknown time zone {tz!r}; use an IANA name like 'Europe/Berlin'", parameter="tz"
        ) from exc


# ---------------------------------------------------------------------------- plan (pure)
class ScheduleInfo(msgspec.Struct, kw_only=True, frozen=True):
    """A periodic schedule as stored on the server."""

    name: str
    task: str
    every: timedelta | None = None
    cron: str | None = None
    """The cron expression as written when the schedule was created."""
    tz: str | None = None
    target: str = ""
    created_at: datetime | None = None
    next_run: datetime | None = None
    """Next firing as computed from the schedule (for ``every``: from its creation time)."""


@dataclass(frozen=True)
class SchedulePlan:
    """What to publish for a schedule: subject, body, headers, and the resulting info."""

    subject: str
    data: bytes
    headers: dict[str, str]
    info: ScheduleInfo


def _encode_payload(spec: HandlerSpec | None, name: str, args: Any, kwargs: Any) -> bytes:
    from ebind.codec import encode_args, encode_raw_args

    if spec is not None:
        return encode_args(spec, tuple(args), dict(kwargs or {}))
    if kwargs:
        raise InvalidArguments(
            f"task {name!r} is not registered in this process, so keyword arguments "
            f"{sorted(kwargs)} cannot be bound; pass them positionally",
            task_name=name,
        )
    return encode_raw_args(name, tuple(args))


def plan_schedule(
    registry: Any,
    name: str,
    task: Any,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    every: timedelta | float | None = None,
    cron: str | None = None,
    tz: str | None = None,
    target: str | None = None,
    now: datetime | None = None,
    codec: PayloadCodec | None = None,
    signer: Signer | None = None,
) -> SchedulePlan:
    """Validate everything and build the schedule message (no IO).

    ``task`` is a Task handle or a task name; arguments are checked against the handler's
    annotations when its spec is known (a handle, or a name registered in ``registry``).
    With ``codec`` the arguments are sealed; with ``signer`` the body is signed for the
    task subject every firing is delivered on (the server keeps the header on copies).

    Raises:
        InvalidArguments: not exactly one of every/cron, a bad interval, cron or time
            zone, or arguments the task does not accept.
        InvalidName: a bad schedule name, task name or target.
    """
    subject = schedule_subject(name)
    if (every is None) == (cron is None):
        raise InvalidArguments(
            f"schedule {name!r}: pass exactly one of every= or cron=", parameter="every"
        )
    zone = _zone(tz, cron)
    spec: HandlerSpec | None = getattr(task, "spec", None)
    if spec is None:
        if not isinstance(task, str):
            raise InvalidArguments(f"expected a task handle or name, got {type(task).__name__}")
        spec = registry.get(task)
    task_name = spec.name if spec is not None else check_task_name(task)
    tgt = check_target(target) if target is not None else ""
    del zone  # validated above; the server applies it (Nats-Schedule-Time-Zone)
    parsed = parse_cron(cron) if cron is not None else None
    header = parsed.expr if parsed is not None else every_header(cast(float, every))
    payload = _encode_payload(spec, task_name, args, kwargs)
    env = TaskEnvelope(
        id=name,
        name=task_name,
        payload=msgspec.Raw(seal(codec, payload) if codec is not None else payload),
        retry_policy=spec.retry if spec is not None else None,
        target=tgt,
        timeout=spec.timeout if spec is not None else None,
        queue=spec.queue if spec is not None else "",
        priority=spec.priority if spec is not None else "",
    )
    headers = {
        HEADER_SCHEDULE: header,
        HEADER_TARGET: task_subject(task_name, tgt, env.queue, env.priority),
        HEADER_TTL: "never",
    }
    if tz is not None:
        headers[HEADER_TIME_ZONE] = tz
    if parsed is not None and parsed.written != parsed.expr:
        headers[HEADER_CRON_WRITTEN] = parsed.written
    data = encoder.encode(env)
    if signer is not None:
        headers[HEADER_SIGNATURE] = signer.sign(headers[HEADER_TARGET], data)
    info = _info_from(name, env, headers, now or datetime.now(UTC), created=None)
    return SchedulePlan(subject, data, headers, info)


def _info_from(
    name: str,
    env: TaskEnvelope,
    headers: Mapping[str, str],
    now: datetime,
    *,
    created: datetime | None,
) -> ScheduleInfo:
    """Describe a stored schedule; ``created`` None means "being created at ``now``"."""
    header = headers.get(HEADER_SCHEDULE, "")
    tz = headers.get(HEADER_TIME_ZONE) or None
    every: timedelta | None = None
    cron: str | None = None
    next_run: datetime | None = None
    if header.startswith("@every "):
        try:
            every = parse_go_duration(header.removeprefix("@every "))
        except ValueError:
            cron = header  # not ours: show it as stored
        if every is not None and every.total_seconds() > 0:
            # Ticks run at creation + k * every (server time), as observed on 2.15.
            start = created or now
            next_run = start + (math.floor((now - start) / every) + 1) * every
    else:
        cron = headers.get(HEADER_CRON_WRITTEN) or header
        try:
            next_run = parse_cron(header).next_after(now, ZoneInfo(tz) if tz else UTC)
        except (InvalidArguments, ZoneInfoNotFoundError, ValueError):
            next_run = None
    return ScheduleInfo(
        name=name,
        task=env.name,
        every=every,
        cron=cron,
        tz=tz,
        target=env.target,
        created_at=created,
        next_run=next_run,
    )


def firing_envelope(env: TaskEnvelope, msg: Any) -> TaskEnvelope:
    """Give a periodic firing its own id ``<name>-<stream seq>``; other messages pass through.

    Every firing of a schedule carries the schedule's body, so without this all firings
    would share one task id (one log identity, one DLQ identity).
    """
    raw = getattr(msg, "raw_headers", None)
    if raw is not None and _SCHEDULER_NAME not in raw:
        return env  # not parsed at all: the header block does not name the scheduler
    headers = msg.headers
    if not headers:
        return env
    scheduler = headers.get(HEADER_SCHEDULER, "")
    if not scheduler.startswith(SCHEDULES_PREFIX + "."):
        return env  # a countdown/eta task (TASKS_SCHEDULED.<id>) keeps its id
    try:
        meta = msg.metadata
        seq, fired_at = int(meta.sequence.stream), meta.timestamp
    except Exception:
        return env
    return msgspec.structs.replace(env, id=f"{env.id}-{seq}", enqueued_at=fired_at)


# ---------------------------------------------------------------------------- IO
async def create_schedule(
    app: Any,
    name: str,
    task: Any,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    every: timedelta | float | None = None,
    cron: str | None = None,
    tz: str | None = None,
    target: str | None = None,
) -> ScheduleInfo:
    """Create or replace the schedule ``name`` (see :meth:`ebind.App.schedule`).

    Raises:
        InvalidArguments / InvalidName: see :func:`plan_schedule`; nothing is published.
        PayloadTooLarge: the schedule with its headers exceeds the server's max_payload.
        PublishFailed: the server did not store the schedule.
        PermissionDenied: this NATS user may not publish schedules (operators do).
    """
    plan = plan_schedule(
        app.registry,
        name,
        task,
        args,
        kwargs,
        every=every,
        cron=cron,
        tz=tz,
        target=target,
        codec=getattr(app, "payload_codec", None),
        signer=getattr(app, "signer", None),
    )
    size, limit = message_size(plan.subject, plan.data, plan.headers), int(app.nc.max_payload)
    if size > limit:
        # The server would refuse it and nats-py would then close the connection for good.
        raise PayloadTooLarge(
            f"schedule {name!r} encodes to {size} bytes with its headers; the server accepts "
            f"at most {limit} (max_payload). Pass large data by reference",
            size=size,
            limit=limit,
        )
    try:
        ack = await guarded(
            app.js,
            plan.subject,
            app.js.publish(
                plan.subject, plan.data, headers=plan.headers, timeout=app.publish_timeout
            ),
            "create periodic schedules",
        )
    except PermissionDenied:
        raise
    except Exception as exc:
        raise PublishFailed(
            f"schedule {name!r} was not stored ({exc!r}); EBIND_TASKS must allow message "
            f"schedules and message TTLs and list {SCHEDULES_SUBJECTS!r} (app.connect() "
            "updates it) on nats-server >= 2.14",
            subject=plan.subject,
        ) from exc
    if ack.stream != TASKS_STREAM:
        raise PublishFailed(
            f"schedule {name!r} was stored in stream {ack.stream!r}, not {TASKS_STREAM}",
            subject=plan.subject,
        )
    return plan.info


async def list_schedules(app: Any) -> list[ScheduleInfo]:
    """Every periodic schedule, sorted by name."""
    from nats.js.errors import NotFoundError

    js = app.js
    info = await js.stream_info(TASKS_STREAM, subjects_filter=SCHEDULES_SUBJECTS)
    out: list[ScheduleInfo] = []
    for subject in sorted(info.state.subjects or {}):
        try:
            raw = await _last_msg(js, subject)
        except NotFoundError:
            continue  # removed meanwhile
        env = _schedule_body(raw.data or b"")
        name = subject.removeprefix(SCHEDULES_PREFIX + ".")
        created = getattr(raw, "time", None)
        out.append(_info_from(name, env, raw.headers or {}, datetime.now(UTC), created=created))
    return out


def _schedule_body(data: bytes) -> TaskEnvelope:
    """The schedule's task envelope, or a placeholder named ``?`` for any unusable bytes."""
    if not too_deep(data):  # deep nesting would exhaust the decoder's recursion
        with contextlib.suppress(Exception):
            return decode_envelope(data)
    return TaskEnvelope(id="", name="?")


async def _last_msg(js: Any, subject: str) -> Any:
    # a message get by subject on EBIND_TASKS, which producers and workers may not make
    return await guarded(
        js,
        f"$JS.API.STREAM.MSG.GET.{TASKS_STREAM}",
        js.get_last_msg(TASKS_STREAM, subject),
        "read periodic schedules",
    )


async def remove_schedule(app: Any, name: str) -> bool:
    """Remove the schedule ``name``; False when there was none."""
    from nats.js.errors import NotFoundError

    subject = schedule_subject(name)
    try:
        await _last_msg(app.js, subject)
    except NotFoundError:
        return False
    await purge_stream(app.js, TASKS_STREAM, subject)
    return True
