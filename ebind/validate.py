"""Untrusted-message checks: pure functions deciding whether a task or event may be used.

Anyone allowed to publish on ``TASKS.>``/``TASKQ.>`` or ``DAG.>`` controls every byte of
what a worker or the scheduler pulls, so nothing in a message is trusted before it passes
here:

- :func:`too_deep` bounds JSON nesting before any decoder recurses into it (a 4 KB message
  nested thousands of levels deep would otherwise raise deep inside the decoder);
- :func:`admit_envelope` decodes a task message and returns the envelope, or the
  :class:`~ebind.wire.TaskError` to dead-letter it with (kind ``decode`` for bytes that are
  not an envelope at all, ``invalid`` for one that breaks a rule);
- :func:`envelope_problem` names the first rule a decoded envelope breaks: ids and names as
  strict as at enqueue, the subject it arrived on consistent with its name and target, a
  reply subject that can only be the task's own response subject, times with a time zone,
  a finite timeout, bounded trace context;
- :mod:`ebind.workflow.event_check` does the same for scheduler events;
- :func:`check_future_ids` guards ``App.future``.

No function here does IO; the worker, the event bus and the App do the dead-lettering.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from itertools import accumulate
from typing import TYPE_CHECKING, TypeVar

import msgspec

from ebind.errors import InvalidName
from ebind.limits.concurrency_rules import MAX_KEY_LEN
from ebind.queues import check_priority, check_queue, lane_subject
from ebind.ratelimit import MAX_RATE_KEY
from ebind.streams import MAX_ID_LEN, b64_token, check_id, check_target, check_task_name
from ebind.wire import ErrorKind, TaskEnvelope, TaskError, decode_envelope

if TYPE_CHECKING:
    from ebind.signing import Signer

__all__ = [
    "MAX_NESTING",
    "MAX_REPLY_TOKEN",
    "MAX_TRACE_ENTRIES",
    "MAX_TRACE_KEY",
    "MAX_TRACE_VALUE",
    "admit_envelope",
    "admit_signed",
    "check_future_ids",
    "envelope_problem",
    "id_problem",
    "invalid",
    "nesting_depth",
    "reply_token_problem",
    "too_deep",
]

MAX_NESTING = 100
"""Deepest JSON nesting accepted in a message (the envelope's own object and payload count)."""
MAX_TRACE_ENTRIES = 32
"""Most ``trace_ctx`` entries an envelope may carry."""
MAX_TRACE_KEY = 128
"""Longest ``trace_ctx`` key (characters)."""
MAX_TRACE_VALUE = 1024
"""Longest ``trace_ctx`` value (characters; a W3C ``tracestate`` is at most 512)."""

_RESP_PREFIX = "RESP."
_TARGET_PREFIX = "TASKS_TARGET."
# Only quotes and brackets matter for nesting; both bracket kinds count as one pair (a
# JSON decoder rejects mismatched kinds where they meet).
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_AS_PARENS = bytes.maketrans(b"[]{}", b"()()")
_STEP = {ord("("): 1, ord(")"): -1}


def _structure(data: bytes) -> bytes:
    """The brackets of JSON ``data`` outside strings, as ``(`` and ``)`` (all C-speed scans)."""
    # Escapes pair left to right, so dropping escaped backslashes first leaves every
    # remaining backslash-quote an escaped quote; then quotes only delimit strings.
    unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Two adjacent quotes are an empty string or two strings meeting with no bracket
    # between them: dropping them changes nothing, and leaves only strings holding brackets.
    kept = unescaped.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in kept:
        kept = b"".join(kept.split(b'"')[::2])
    return kept.translate(_AS_PARENS)


def nesting_depth(data: bytes) -> int:
    """Deepest ``[``/``{`` nesting in JSON ``data``, not counting brackets inside strings.

    On bytes that are not JSON the count may be too high, never too low for the part a
    decoder reads before it reports the error, so a decoder never recurses deeper.
    """
    structure = _structure(data)
    if not structure:
        return 0
    return max(0, *accumulate(map(_STEP.__getitem__, structure)))


def too_deep(data: bytes, limit: int = MAX_NESTING) -> bool:
    """Whether ``data`` nests deeper than ``limit``; cheap unless it has many brackets.

    Like :func:`nesting_depth`, never too low; unbalanced brackets count as too deep.
    """
    # Counting is a fast C scan; the exact check runs only when the count allows a violation.
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    structure = _structure(data)
    # Each pass removes the innermost level, so a depth-d document is empty after d passes
    # (a few passes for wide, shallow data; at most limit + 1 for a hostile one).
    for _ in range(limit):
        if not structure:
            return False
        structure = structure.replace(b"()", b"")
    return bool(structure)


# Memos of checks that passed, so the hot path checks a route (subject, name, target) or a
# client id once rather than per message; cleared when full so no sender can grow them.
_MEMO_LIMIT = 1024
_good_routes: dict[str, tuple[str, str, str, str]] = {}
_good_clients: set[str] = set()
_Memo = TypeVar("_Memo", dict[str, tuple[str, str, str, str]], set[str])


def _remember(memo: _Memo) -> _Memo:
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    return memo


def invalid(message: str) -> TaskError:
    """A non-retryable TaskError of kind ``invalid``."""
    return TaskError(kind=ErrorKind.INVALID.value, message=message, retryable=False)


def admit_envelope(data: bytes, subject: str) -> TaskEnvelope | TaskError:
    """The envelope in ``data`` if it may run, else the error to dead-letter it with."""
    if too_deep(data):
        return invalid(f"task message nests JSON deeper than {MAX_NESTING} levels")
    try:
        env = decode_envelope(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return TaskError(
            kind=ErrorKind.DECODE.value,
            message=f"task envelope is not valid: {exc}",
            retryable=False,
        )
    except Exception as exc:  # e.g. RecursionError, MemoryError: still this message's fault
        return invalid(f"task envelope could not be decoded: {type(exc).__name__}: {exc}")
    problem = envelope_problem(env, subject)
    if problem is not None:
        return invalid(problem)
    return env


def admit_signed(
    subject: str, data: bytes, headers: Mapping[str, str] | None, signer: Signer | None
) -> TaskEnvelope | TaskError:
    """The envelope a worker would accept from this message, else the reason it would not.

    The worker's own checks, signature first: an expired message that a worker would have
    refused is kept only as raw bytes, so a requeue (which signs what it republishes)
    cannot turn it into a task, and nothing it says (its reply subject) is used.
    """
    if signer is not None:
        forged = signer.check(subject, data, headers)
        if forged is not None:
            return forged
    return admit_envelope(data, subject)


_id_match = re.compile(r"[A-Za-z0-9_-]+").fullmatch  # the charset check_id enforces


def id_problem(value: str, kind: str) -> str | None:
    """The reason ``value`` is not a valid ``kind`` id, or None."""
    try:
        check_id(value, kind)
    except InvalidName as exc:
        return str(exc)
    return None


def _task_id_problem(env: TaskEnvelope) -> str | None:
    if not env.dag_id and not env.step_id:
        return id_problem(env.id, "task id")
    if not env.dag_id or not env.step_id:
        return "dag_id and step_id must be set together (a DAG step carries both)"
    problem = id_problem(env.dag_id, "dag_id") or id_problem(env.step_id, "step_id")
    if problem is not None:
        return problem
    if env.id != f"{env.dag_id}:{env.step_id}":
        return f"a DAG step's task id must be '<dag_id>:<step_id>', got {env.id[:160]!r}"
    return None


def _route_problem(env: TaskEnvelope, subject: str) -> str | None:
    """Name, target and the subject they imply (memoised per subject by the caller)."""
    try:
        check_task_name(env.name)
    except InvalidName as exc:
        return str(exc)
    if env.target:
        try:
            check_target(env.target)
        except InvalidName as exc:
            return str(exc)
        expected = f"{_TARGET_PREFIX}{b64_token(env.target)}.{env.name}"
    else:
        try:
            queue = check_queue(env.queue) if env.queue else ""
            band = check_priority(env.priority) if env.priority else ""
        except InvalidName as exc:
            return str(exc)
        expected = lane_subject(env.name, queue, band)
    if subject != expected:
        return (
            f"message arrived on {subject[:300]!r} but its name, target, queue and priority "
            f"belong on {expected[:300]!r}"
        )
    return None


MAX_REPLY_TOKEN = 64
"""Characters a reply token may have (ebind's producers send 32)."""
_TOKEN = re.compile(r"[0-9a-f]+")


def reply_token_problem(token: str) -> str | None:
    """Why ``token`` is no reply token (1 to 64 lowercase hex digits), or None."""
    if len(token) > MAX_REPLY_TOKEN or _TOKEN.fullmatch(token) is None:
        return f"reply_token {token[:80]!r} must be 1 to {MAX_REPLY_TOKEN} lowercase hex digits"
    return None


def _reply_problem(env: TaskEnvelope) -> str | None:
    if env.reply_token:
        problem = reply_token_problem(env.reply_token)
        if problem is not None:
            return problem
    reply = env.reply_to
    if not reply:
        return None
    tail = "." + env.id
    client = reply[len(_RESP_PREFIX) : -len(tail)]
    if not (reply.startswith(_RESP_PREFIX) and reply.endswith(tail) and client):
        return (
            f"reply_to {reply[:300]!r} is not this task's response subject "
            f"'RESP.<client_id>.{env.id}'"
        )
    # With the prefix and the task id fixed, a valid client id makes reply_to exactly
    # resp_subject(client, env.id): no other subject can be reached.
    if client in _good_clients:
        return None
    problem = id_problem(client, "client id in reply_to")
    if problem is None:
        _remember(_good_clients).add(client)
    return problem


def _time_problem(name: str, value: datetime | None) -> str | None:
    if value is not None and value.tzinfo is None:
        return f"{name} {value.isoformat()} has no time zone (send RFC 3339 with an offset or Z)"
    return None


def _trace_problem(trace: dict[str, str]) -> str | None:
    if len(trace) > MAX_TRACE_ENTRIES:
        return f"trace_ctx has {len(trace)} entries; the limit is {MAX_TRACE_ENTRIES}"
    for key, value in trace.items():
        if not key or len(key) > MAX_TRACE_KEY:
            return f"trace_ctx key {key[:64]!r} must be 1 to {MAX_TRACE_KEY} characters"
        if len(value) > MAX_TRACE_VALUE:
            return (
                f"trace_ctx value of {key!r} is {len(value)} characters; "
                f"the limit is {MAX_TRACE_VALUE}"
            )
    return None


def _limit_key_problem(env: TaskEnvelope) -> str | None:
    """The rate or concurrency key is longer than the limiters accept."""
    if env.rate_key and len(env.rate_key.encode("utf-8")) > MAX_RATE_KEY:
        return f"rate_key is longer than {MAX_RATE_KEY} bytes"
    if len(env.concurrency_key) > MAX_KEY_LEN:
        return f"concurrency_key is longer than {MAX_KEY_LEN} characters"
    return None


def envelope_problem(env: TaskEnvelope, subject: str) -> str | None:
    """The first rule ``env`` (which arrived on ``subject``) breaks, or None if it may run."""
    route = _good_routes.get(subject)
    if route is None or route != (env.name, env.target, env.queue, env.priority):
        problem = _route_problem(env, subject)
        if problem is not None:
            return problem
        _remember(_good_routes)[subject] = (env.name, env.target, env.queue, env.priority)
    # The common case is checked inline (a few attribute reads and one regex); the helpers
    # run only to name what is wrong.
    if env.dag_id or env.step_id:
        problem = _task_id_problem(env)
        if problem is not None:
            return problem
    elif len(env.id) > MAX_ID_LEN or _id_match(env.id) is None:
        return id_problem(env.id, "task id")
    if env.reply_to or env.reply_token:
        problem = _reply_problem(env)
        if problem is not None:
            return problem
    deadline, enqueued_at = env.deadline, env.enqueued_at
    if (deadline is not None and deadline.tzinfo is None) or (
        enqueued_at is not None and enqueued_at.tzinfo is None
    ):
        return _time_problem("deadline", deadline) or _time_problem("enqueued_at", enqueued_at)
    timeout = env.timeout
    if timeout is not None and not (0 < timeout < math.inf):  # NaN fails both comparisons
        return f"timeout must be a finite number of seconds > 0, got {timeout!r}"
    keys = _limit_key_problem(env)
    if keys:
        return keys
    if env.trace_ctx:
        return _trace_problem(env.trace_ctx)
    return None


def check_future_ids(task_id: str, client_id: str | None) -> None:
    """Raise InvalidName unless ``task_id`` (and ``client_id`` when given) are plain ids."""
    check_id(task_id, "task_id")
    if client_id is not None:
        check_id(client_id, "client_id")
