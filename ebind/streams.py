"""Stream, consumer, KV and subject names; identifier validation; idempotent stream setup.

Every user string that reaches a subject or a KV key passes through a check here:
ids must match ``[A-Za-z0-9_-]{1,128}``, task names are dot-separated tokens of that
charset, and free-form strings (targets, signal names, labels) are base64url-encoded.
"""

from __future__ import annotations

import base64
import re

from ebind.errors import InvalidName

__all__ = [
    "DAG_EVENTS_STREAM",
    "DLQ_STREAM",
    "DUPLICATE_WINDOW",
    "KV_DAGS",
    "KV_LEASES",
    "MAX_ID_LEN",
    "MAX_TARGET_LEN",
    "MAX_TASK_NAME_LEN",
    "RESP_STREAM",
    "TASKS_STREAM",
    "WORKER_DURABLE",
    "b64_token",
    "check_id",
    "check_task_name",
    "dlq_subject",
    "resp_subject",
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
WORKER_DURABLE = "ebind-worker"
SCHEDULER_DURABLE = "ebind-scheduler"

TASKS_MAX_AGE = 24 * 3600.0
RESP_MAX_AGE = 3600.0
DLQ_MAX_AGE = 7 * 24 * 3600.0
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
    """Return ``name`` if it is dot-separated tokens of ``[A-Za-z0-9_-]``, else raise InvalidName."""
    if not isinstance(name, str) or not name:
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
    if not isinstance(target, str) or not target.strip():
        raise InvalidName("target must be a non-empty string", kind="target", value=str(target))
    if len(target.encode("utf-8")) > MAX_TARGET_LEN:
        raise InvalidName(
            f"target is {len(target.encode('utf-8'))} bytes; the limit is {MAX_TARGET_LEN}",
            kind="target",
            value=target[:64],
        )
    return target


def task_subject(name: str, target: str = "") -> str:
    """``TASKS.<name>`` or ``TASKS_TARGET.<b64(target)>.<name>``."""
    if target:
        return f"TASKS_TARGET.{b64_token(target)}.{name}"
    return f"TASKS.{name}"


def target_filter(claim: str) -> str:
    """Consumer filter subject for every task targeted at ``claim``."""
    return f"TASKS_TARGET.{b64_token(claim)}.>"


def target_durable(claim: str) -> str:
    """Durable consumer name shared by all workers holding ``claim``."""
    return f"ebind-targets-{b64_token(claim)}"


def resp_subject(client_id: str, task_id: str) -> str:
    """Subject a task's response is published to."""
    return f"RESP.{client_id}.{task_id}"


def dlq_subject(name: str) -> str:
    """Subject a dead letter for task ``name`` is published to."""
    return f"DLQ.{name}"
