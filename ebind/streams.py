"""Stream, consumer, KV and subject names; identifier validation; idempotent stream setup.

Every user string that reaches a subject or a KV key passes through a check here:
ids must match ``[A-Za-z0-9_-]{1,128}``, task names are dot-separated tokens of that
charset, and free-form strings (targets, signal names, labels) are base64url-encoded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from typing import Any, cast

from ebind._denied import guarded
from ebind.errors import InvalidArguments, InvalidName, PermissionDenied
from ebind.logging import get_logger
from ebind.retention import Retention

__all__ = [
    "DAG_EVENTS_STREAM",
    "DLQ_STREAM",
    "DUPLICATE_WINDOW",
    "KV_DAGS",
    "KV_LEASES",
    "KV_RATELIMITS",
    "MAX_CONSUMERS",
    "MAX_ID_LEN",
    "MAX_TARGET_LEN",
    "MAX_TASK_NAME_LEN",
    "RESP_STREAM",
    "TASKS_STREAM",
    "WORKER_DURABLE",
    "b64_token",
    "check_id",
    "check_target",
    "check_task_name",
    "delete_message",
    "dlq_subject",
    "ensure_streams",
    "operator_differences",
    "purge_stream",
    "resp_subject",
    "stream_additions",
    "subject_matches",
    "target_durable",
    "target_filter",
    "task_subject",
    "unb64_token",
]

TASKS_STREAM = "EBIND_TASKS"
RESP_STREAM = "EBIND_RESP"
DLQ_STREAM = "EBIND_DLQ"
DAG_EVENTS_STREAM = "EBIND_DAG_EVENTS"
KV_DAGS = "ebind-dags"
KV_LEASES = "ebind-leases"
KV_RATELIMITS = "ebind-ratelimits"
RATELIMIT_IDLE_AGE = 3600.0
"""Seconds a rate-limit record outlives its last lease (a later one starts afresh)."""
WORKER_DURABLE = "ebind-worker"
SCHEDULER_DURABLE = "ebind-scheduler"

DUPLICATE_WINDOW = 300.0

MAX_ID_LEN = 128
MAX_TASK_NAME_LEN = 200
MAX_TARGET_LEN = 512

_ID_RE = re.compile(r"[A-Za-z0-9_-]+")
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+")


def _describe_bad(value: str, allowed: re.Pattern[str]) -> str:
    for ch in value:
        if not allowed.fullmatch(ch):
            return f"character {ch!r} (U+{ord(ch):04X}) is not allowed"
    return "it is empty"


def check_id(value: str, kind: str = "id") -> str:
    """Return ``value`` if it is a safe id (``[A-Za-z0-9_-]{1,128}``), else raise InvalidName."""
    if not isinstance(value, str):
        raise InvalidName(f"{kind} must be a string, got {type(value).__name__}", kind=kind)
    if len(value) > MAX_ID_LEN:
        raise InvalidName(
            f"{kind} is {len(value)} characters long; the limit is {MAX_ID_LEN}",
            kind=kind,
            value=value[:64],
        )
    if not _ID_RE.fullmatch(value):
        reason = _describe_bad(value, _ID_RE)
        raise InvalidName(
            f"invalid {kind} {value[:64]!r}: {reason}; use letters, digits, '-' and '_'",
            kind=kind,
            value=value,
        )
    return value


def check_task_name(name: str) -> str:
    """Return ``name`` if it is dot-separated ``[A-Za-z0-9_-]`` tokens, else raise InvalidName."""
    if not isinstance(cast(object, name), str) or not name:
        raise InvalidName("task name must be a non-empty string", kind="task name", value=str(name))
    if len(name) > MAX_TASK_NAME_LEN:
        raise InvalidName(
            f"task name is {len(name)} characters long; the limit is {MAX_TASK_NAME_LEN}",
            kind="task name",
            value=name[:64],
        )
    for token in name.split("."):
        if not _TOKEN_RE.fullmatch(token):
            reason = "it has an empty part" if not token else _describe_bad(token, _TOKEN_RE)
            raise InvalidName(
                f"invalid task name {name[:64]!r}: {reason}; use dot-separated parts of "
                "letters, digits, '-' and '_' (pass name= to @app.task)",
                kind="task name",
                value=name,
            )
    return name


def b64_token(value: str) -> str:
    """Base64url without padding of the UTF-8 string: a single safe subject token / key part."""
    return base64.urlsafe_b64encode(value.encode("utf-8")).rstrip(b"=").decode("ascii")


def unb64_token(token: str) -> str:
    """Inverse of :func:`b64_token`."""
    pad = "=" * (-len(token) % 4)
    return base64.urlsafe_b64decode(token + pad).decode("utf-8")


def check_target(target: str) -> str:
    """Validate a placement target / claim (any non-blank string up to MAX_TARGET_LEN)."""
    if not isinstance(cast(object, target), str) or not target.strip():
        raise InvalidName("target must be a non-empty string", kind="target", value=str(target))
    if len(target.encode("utf-8")) > MAX_TARGET_LEN:
        raise InvalidName(
            f"target is {len(target.encode('utf-8'))} bytes; the limit is {MAX_TARGET_LEN}",
            kind="target",
            value=target[:64],
        )
    return target


def task_subject(name: str, target: str = "", queue: str = "", priority: str = "") -> str:
    """``TASKS_TARGET.<b64(target)>.<name>`` when targeted, else the subject of its lane.

    A lane is ``TASKS.<name>`` for the default queue and normal band, otherwise
    ``TASKQ.<queue>.<band>.<name>`` (see :mod:`ebind.queues`).
    """
    if target:
        return f"TASKS_TARGET.{b64_token(target)}.{name}"
    if not queue and not priority:
        return f"TASKS.{name}"
    from ebind.queues import lane_subject  # imports this module

    return lane_subject(name, queue, priority)


def target_filter(claim: str) -> str:
    """Consumer filter subject for every task targeted at ``claim``."""
    return f"TASKS_TARGET.{b64_token(claim)}.>"


def target_durable(claim: str) -> str:
    """Durable consumer name shared by all workers holding ``claim``."""
    return f"ebind-targets-{b64_token(claim)}"


def resp_subject(client_id: str, task_id: str) -> str:
    """Subject a task's response is published to."""
    return f"RESP.{client_id}.{task_id}"


def subject_matches(filter_subject: str, subject: str) -> bool:
    """Whether ``subject`` matches the NATS filter (``*`` one token, ``>`` the rest)."""
    want, got = filter_subject.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or (token != "*" and token != got[i]):
            return False
    return len(got) == len(want)


def dlq_subject(name: str) -> str:
    """Subject a dead letter for task ``name`` is published to."""
    return f"DLQ.{name}"


# ---------------------------------------------------------------------------- provisioning
# Explicit consumer caps (every consumer is server state; a runaway client must hit a
# limit, not the server's memory). They cannot be changed on an existing stream,
# so they are generous where consumers are legitimately many (one durable per worker claim,
# result watches on the DAG bucket) and small where ebind never creates any (RESP: results
# come through one core subscription and direct gets).
MAX_CONSUMERS = {
    TASKS_STREAM: 4096,
    RESP_STREAM: 64,
    DLQ_STREAM: 64,
    DAG_EVENTS_STREAM: 256,
    f"KV_{KV_DAGS}": 4096,
    f"KV_{KV_LEASES}": 256,
    f"KV_{KV_RATELIMITS}": 64,
    "EBIND_PROGRESS": 64,
}
SCHEDULED_SUBJECTS = "TASKS_SCHEDULED.>"
# periodic schedules (ebind/periodic.py): one schedule message per TASKS_SCHEDULES.<name>
PERIODIC_SUBJECTS = "TASKS_SCHEDULES.>"


def _stream_configs(replicas: int, retention: Retention | None = None) -> list[Any]:
    from nats.js import api

    from ebind.horizon import tasks_max_age

    keep = retention if retention is not None else Retention()
    tasks_age = tasks_max_age(keep.tasks)
    file = api.StorageType.FILE
    work_queue = api.RetentionPolicy.WORK_QUEUE
    limits = api.RetentionPolicy.LIMITS
    return [
        # Discard "old" is forced: the server rejects message schedules with discard "new"
        # (err 10052). With no max_msgs/max_bytes set, only max_age ever removes messages,
        # and max_age is the tasks horizon plus a margin so the expirer records them first.
        api.StreamConfig(
            name=TASKS_STREAM,
            subjects=[
                "TASKS.>",
                "TASKS_TARGET.>",
                SCHEDULED_SUBJECTS,
                PERIODIC_SUBJECTS,
                "TASKQ.>",
            ],
            retention=work_queue,
            storage=file,
            max_age=tasks_age,
            # the server refuses a duplicate window longer than max_age (short test horizons)
            duplicate_window=min(DUPLICATE_WINDOW, tasks_age),
            allow_msg_schedules=True,
            # periodic schedules carry Nats-TTL: never so max_age cannot delete them
            allow_msg_ttl=True,
            max_consumers=MAX_CONSUMERS[TASKS_STREAM],
            num_replicas=replicas,
        ),
        api.StreamConfig(
            name=RESP_STREAM,
            subjects=["RESP.>"],
            retention=limits,
            storage=file,
            max_age=keep.results,
            allow_direct=True,
            # When max_age removes a response the server leaves a marker (Nats-Marker-Reason:
            # MaxAge) on its subject, so a late waiter learns the result expired. max_age
            # removes the marker too, so it lasts one more results retention.
            allow_msg_ttl=True,
            subject_delete_marker_ttl=keep.results,
            max_consumers=MAX_CONSUMERS[RESP_STREAM],
            num_replicas=replicas,
        ),
        api.StreamConfig(
            name=DLQ_STREAM,
            subjects=["DLQ.>"],
            retention=limits,
            storage=file,
            max_age=keep.dead_letters,
            max_consumers=MAX_CONSUMERS[DLQ_STREAM],
            num_replicas=replicas,
        ),
        api.StreamConfig(
            name=DAG_EVENTS_STREAM,
            subjects=["DAG.>"],
            retention=work_queue,
            storage=file,
            max_age=tasks_age,
            max_consumers=MAX_CONSUMERS[DAG_EVENTS_STREAM],
            num_replicas=replicas,
        ),
        _kv_config(KV_DAGS, replicas),
        _kv_config(KV_LEASES, replicas),
        # rate limits (ebind/ratelimit.py): a limit idle this long has nothing worth keeping
        _kv_config(KV_RATELIMITS, replicas, max_age=RATELIMIT_IDLE_AGE),
        # progress (ebind/progress.py): only each task's latest report, gone with its result
        api.StreamConfig(
            name="EBIND_PROGRESS",
            subjects=["PROGRESS.>"],
            retention=limits,
            storage=file,
            max_age=keep.results,
            max_msgs_per_subject=1,
            allow_direct=True,
            max_consumers=MAX_CONSUMERS["EBIND_PROGRESS"],
            num_replicas=replicas,
        ),
    ]


def _kv_config(bucket: str, replicas: int, max_age: float | None = None) -> Any:
    # The same stream nats-py's create_key_value builds (so js.key_value() binds to it), plus
    # an explicit consumer cap; allow_msg_ttl gives per-key TTLs (the scheduler lease). No
    # rollup headers: a client allowed to write one key could otherwise send "Nats-Rollup:
    # all" with it and purge every key of the bucket (permissions see only the subject).
    from nats.js import api

    return api.StreamConfig(
        name=f"KV_{bucket}",
        subjects=[f"$KV.{bucket}.>"],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        allow_direct=True,
        allow_rollup_hdrs=False,
        allow_msg_ttl=True,
        deny_delete=True,
        discard=api.DiscardPolicy.NEW,
        duplicate_window=120.0,
        max_msgs_per_subject=1,
        max_age=max_age,
        max_consumers=MAX_CONSUMERS[f"KV_{bucket}"],
        num_replicas=replicas,
    )


# Flags ebind needs on an existing stream: switched on when off, never switched off.
_REQUIRED_FLAGS = ("allow_msg_schedules", "allow_direct", "allow_msg_ttl")
# Settings ebind only chooses at creation; on an existing stream the operator's value stays.
_CREATE_ONLY = ("max_age", "duplicate_window", "subject_delete_marker_ttl")
# The server reports durations in nanoseconds and nats-py divides: compare within 1 ms.
_SECONDS_TOLERANCE = 1e-3


def _seconds(value: object) -> float:
    """A duration as the server reports it (None / 0 both mean unset or unlimited)."""
    return float(value) if isinstance(value, int | float) and value > 0 else 0.0


def stream_additions(have: Any, want: Any) -> dict[str, Any]:
    """What ebind must add to an existing stream: missing subjects, required flags, replicas.

    Only additions, with one exception: rollup headers are switched off on ebind's buckets,
    since they let a client allowed to write one key purge all of them. Nothing else an
    operator set is lowered or reverted, and a stream already in shape yields ``{}`` (so a
    steady-state connect sends no update).
    """
    changes: dict[str, Any] = {}
    have_subjects = set(have.subjects or ())
    missing = [s for s in want.subjects or () if s not in have_subjects]
    if missing:
        changes["subjects"] = [*(have.subjects or ()), *missing]
    for field_name in _REQUIRED_FLAGS:
        if getattr(want, field_name) and not getattr(have, field_name):
            changes[field_name] = True
    # The one flag switched off, on ebind's buckets (other streams keep what the server
    # sets): rollup headers let one key's writer purge a whole bucket.
    if (
        str(want.name).startswith("KV_")
        and getattr(have, "allow_rollup_hdrs", False)
        and getattr(want, "allow_rollup_hdrs", None) is False
    ):
        changes["allow_rollup_hdrs"] = False
    # A response subject's expiry marker needs per-message TTLs; set once, when absent.
    want_marker = _seconds(getattr(want, "subject_delete_marker_ttl", None))
    if want_marker and not _seconds(getattr(have, "subject_delete_marker_ttl", None)):
        changes["subject_delete_marker_ttl"] = want_marker
        changes["allow_msg_ttl"] = True
    # Never lower replicas: a tool run with the default of 1 must not shrink an R3 deployment.
    if (want.num_replicas or 1) > (have.num_replicas or 1):
        changes["num_replicas"] = want.num_replicas
    return changes


def operator_differences(have: Any, want: Any) -> dict[str, tuple[float, float]]:
    """Create-only settings whose server value differs from ebind's: ``{field: (have, want)}``."""
    found: dict[str, tuple[float, float]] = {}
    for field_name in _CREATE_ONLY:
        wanted = _seconds(getattr(want, field_name, None))
        if not wanted:
            continue
        had = _seconds(getattr(have, field_name, None))
        if abs(had - wanted) > _SECONDS_TOLERANCE:
            found[field_name] = (had, wanted)
    return found


_logged_differences: set[tuple[str, str, Any]] = set()


def _log_kept(log: Any, stream: str, differences: dict[str, tuple[float, float]]) -> None:
    """Log each operator-set value ebind keeps, once per process and value."""
    fresh = {k: v for k, v in differences.items() if (stream, k, v[0]) not in _logged_differences}
    if not fresh:
        return
    _logged_differences.update((stream, k, v[0]) for k, v in fresh.items())
    log.info(
        "streams.server_setting_kept",
        stream=stream,
        settings={k: {"server": v[0], "ebind": v[1]} for k, v in sorted(fresh.items())},
        note="the value set on the server stays; ebind never lowers or reverts it",
    )


# What a size limit with the "old" discard policy silently deletes, per stream.
_SILENT_LOSS = {
    TASKS_STREAM: "the oldest queued tasks, without a dead letter",
    DAG_EVENTS_STREAM: "the oldest workflow events, without a dead letter",
    RESP_STREAM: "the oldest stored results, without the marker that tells a later waiter "
    "its result expired (it waits for a result that is gone)",
    DLQ_STREAM: "the oldest dead letters, the only record of the tasks that failed",
}


def silent_discard_limits(stream: str, config: Any) -> dict[str, int]:
    """Size limits an operator set that make the server drop the oldest records silently.

    On the task, event, results and dead-letter streams a ``max_msgs`` / ``max_bytes``
    bound with the "old" discard policy removes what they hold without a trace once
    reached (ebind sets neither; each has its own retention by age); with "new" the
    publisher gets an error (``StreamFull``) instead.
    """
    if stream not in _SILENT_LOSS:
        return {}
    discard = getattr(config, "discard", None)
    if str(getattr(discard, "value", discard) or "old").lower() != "old":
        return {}
    limits = {k: int(getattr(config, k, 0) or 0) for k in ("max_msgs", "max_bytes")}
    return {k: v for k, v in limits.items() if v > 0}


def _warn_silent_discard(log: Any, stream: str, config: Any) -> None:
    limits = silent_discard_limits(stream, config)
    if not limits or (stream, "discard", tuple(sorted(limits.items()))) in _logged_differences:
        return
    _logged_differences.add((stream, "discard", tuple(sorted(limits.items()))))
    log.warning(
        "streams.silent_discard_configured",
        stream=stream,
        limits=limits,
        note=f"once a limit is reached the server deletes {_SILENT_LOSS[stream]}; remove "
        "the limit (the stream's retention by age bounds it), or use the 'new' discard "
        "policy so publishers get StreamFull instead",
    )


async def _dag_keys(js: Any) -> int:
    from nats.js.errors import NotFoundError

    try:
        info = await _info(js, f"KV_{KV_DAGS}")
    except NotFoundError:
        return 0
    return int(info.state.messages or 0)


async def _ensure_one(js: Any, want: Any, dag_keys: int) -> Any:
    from nats.js.errors import APIError, NotFoundError

    log = get_logger("ebind.streams")
    try:
        info = await _info(js, want.name)
    except NotFoundError:
        try:
            await _create(js, want)
        except APIError as exc:
            if exc.err_code != 10058:  # 10058 = created concurrently by another process
                raise
            return want
        if dag_keys and want.name != f"KV_{KV_DAGS}":
            # Creating a stream while the DAG bucket holds records means it vanished
            # under live state (nats-server #6888/#7556), not a first start.
            log.warning(
                "streams.created_missing",
                stream=want.name,
                dag_keys=dag_keys,
                hint="the stream was missing while ebind-dags holds DAG records; "
                "tasks published before may be lost, the workflow sweep re-enqueues DAG steps",
            )
        else:
            log.debug("streams.created", stream=want.name)
        return want
    changes = stream_additions(info.config, want)
    kept = operator_differences(info.config, want)
    _log_kept(log, want.name, {k: v for k, v in kept.items() if k not in changes})
    _warn_silent_discard(log, want.name, info.config)
    if not changes:
        return info.config
    try:
        await guarded(
            js,
            f"$JS.API.STREAM.UPDATE.{want.name}",
            js.update_stream(info.config.evolve(**changes)),
            f"update stream {want.name}",
        )
        log.info("streams.updated", stream=want.name, changes=sorted(changes))
    except (APIError, PermissionDenied) as exc:
        # Least-privileged clients (no STREAM.UPDATE) keep working on what exists.
        log.warning(
            "streams.update_failed", stream=want.name, changes=sorted(changes), error=str(exc)
        )
    return info.config


# Without these rights a request would wait for a reply the server never sends (it only
# reports the violation to the connection): guarded() makes each a PermissionDenied.
async def _info(js: Any, name: str) -> Any:
    return await guarded(
        js, f"$JS.API.STREAM.INFO.{name}", js.stream_info(name), f"read stream {name}'s info"
    )


async def _create(js: Any, want: Any) -> None:
    try:
        await guarded(
            js, f"$JS.API.STREAM.CREATE.{want.name}", js.add_stream(want), "create streams"
        )
    except PermissionDenied as exc:
        raise PermissionDenied(
            f"stream {want.name} does not exist and this NATS user may not create it; an "
            "operator provisions the streams once with `ebind stream provision` (or any ebind "
            "command run with operator rights)",
            subject=exc.subject,
            action=exc.action,
        ) from None


DELETE_TIMEOUT = 5.0
"""Seconds to wait for the server to confirm one message delete."""


async def delete_message(nc: Any, stream: str, seq: int) -> None:
    """Delete message ``seq`` of ``stream``, its bytes left to the block's compaction.

    nats-py's ``delete_msg`` asks the server to overwrite the message on disk first, which
    costs about a millisecond a message; every message ebind deletes one by one is already
    recorded (a dead letter holds its bytes), so there is nothing to erase.

    Raises:
        nats.js.errors.APIError: the server refused (``NotFoundError``: no such message).
    """
    from nats.js.errors import APIError

    reply = await nc.request(
        f"$JS.API.STREAM.MSG.DELETE.{stream}",
        json.dumps({"seq": int(seq), "no_erase": True}).encode(),
        timeout=DELETE_TIMEOUT,
    )
    doc = json.loads(reply.data)
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        raise APIError.from_error(doc["error"])


async def purge_stream(
    js: Any, name: str, subject: str | None = None, *, before: int | None = None
) -> None:
    """Purge stream ``name`` (or one subject of it); PermissionDenied when not allowed.

    ``before`` purges only messages with a lower sequence, so what was stored after the
    caller counted stays.
    """
    await guarded(
        js,
        f"$JS.API.STREAM.PURGE.{name}",
        js.purge_stream(name, seq=before, subject=subject),
        f"purge stream {name}",
    )


def _valid_replicas(replicas: object) -> bool:
    return isinstance(replicas, int) and not isinstance(replicas, bool) and 1 <= replicas <= 5


async def ensure_streams(
    js: Any, replicas: int = 1, retention: Retention | None = None
) -> dict[str, Any]:
    """Create every ebind stream and KV bucket, or add what ebind needs to existing ones.

    New streams get their limits from ``retention`` (its defaults when None). Existing
    streams are read first, so a client without create permission works against
    pre-provisioned streams; only missing subjects, required flags and higher replicas are
    added, and an operator's max_age or duplicate window is kept (logged once, at info).
    Logs ``streams.created_missing`` (warning) when it has to create a stream while the
    ``ebind-dags`` bucket holds records.

    Returns:
        Each stream's config as last read from (or created on) the server, by name.

    Raises:
        PermissionDenied: a stream is missing and this user may not create it, or may not
            read stream info at all.
    """
    if not _valid_replicas(replicas):
        raise InvalidArguments(f"replicas must be an integer from 1 to 5, got {replicas!r}")
    dag_keys = await _dag_keys(js)
    found: dict[str, Any] = {}
    for want in _stream_configs(replicas, retention):
        found[want.name] = await _ensure_retrying(js, want, dag_keys)
    return found


# A JetStream API request can time out or meet no leader while a cluster has just formed
# or elects its meta leader (creating an R3 stream waits for its peers): such moments are
# ridden out, a few seconds in all, before connect() gives up.
_PROVISION_BACKOFF = (0.25, 0.5, 1.0, 2.0)


async def _ensure_retrying(js: Any, want: Any, dag_keys: int) -> Any:
    import nats.errors
    from nats.js.errors import ServiceUnavailableError

    transient = (TimeoutError, nats.errors.NoRespondersError, ServiceUnavailableError)
    for delay in (*_PROVISION_BACKOFF, None):
        try:
            return await _ensure_one(js, want, dag_keys)
        except transient as exc:
            if delay is None:
                raise
            get_logger("ebind.streams").info(
                "streams.provision_retry", stream=want.name, error=repr(exc), delay=delay
            )
            await asyncio.sleep(delay)
