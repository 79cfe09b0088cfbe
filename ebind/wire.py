"""Wire types: the task envelope, responses, errors and dead letters, as msgspec Structs.

JSON field names are part of the wire format. Times are RFC 3339 UTC; an unset time is
omitted.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated

import msgspec

from ebind.retry import RetryPolicy

StoredTime = Annotated[datetime, msgspec.Meta(tz=True)]
"""A time in a stored record: it must carry its zone (a naive time cannot be compared)."""

__all__ = [
    "DLQEntry",
    "ErrorKind",
    "TaskEnvelope",
    "TaskError",
    "TaskResponse",
    "decode_envelope",
    "decode_response",
    "encoder",
]


class ErrorKind(str, enum.Enum):
    """Error kinds ebind itself produces; handlers may use their own strings too."""

    HANDLER = "handler"
    DECODE = "decode"
    UNKNOWN_HANDLER = "unknown_handler"
    PANIC = "panic"
    DEADLINE = "deadline"
    ARG_COUNT = "arg_count"
    ARG_TYPE = "arg_type"
    TIMEOUT = "timeout"
    ENCODE = "encode"
    WORKER_LOST = "worker_lost"
    INVALID = "invalid"
    """The message itself is malformed or breaks a rule (bad id, reply subject, naive time)."""
    UNSIGNED = "unsigned"
    """The worker requires signed messages and this one carries no signature."""
    BAD_SIGNATURE = "bad_signature"
    """The message's signature does not match any of the worker's signing keys."""
    STEP_UNPROVEN = "step_unproven"
    """A DAG step message that is not the scheduler's current dispatch of that step."""
    EXPIRED = "expired"
    """The task could not run before its retention horizon."""
    MAX_DELIVERIES = "max_deliveries"
    """The server stopped delivering the message after its delivery limit."""
    REVOKED = "revoked"
    """The task was revoked before or while it ran."""
    SUPERSEDED = "superseded"
    """A newer task of the same concurrency key cancelled this one (cancel_in_progress)."""
    PURGED = "purged"
    """An operator purged the task from EBIND_TASKS before it ran."""


class TaskError(msgspec.Struct, kw_only=True, frozen=True):
    """Why a task attempt failed: ``kind``, ``message`` and whether a retry may help."""

    kind: str
    message: str
    retryable: bool = False

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


class TaskEnvelope(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The message a producer publishes on the TASKS stream: one task to run.

    ``attempt`` and ``worker_id`` are filled in memory by the worker on each delivery;
    the published values are never trusted. ``reply_token`` is a secret of the producer
    that the response echoes: its waiter takes only a response carrying it, so another
    producer that sends a task with the same id and reply subject cannot answer it.
    """

    id: str
    name: str
    payload: msgspec.Raw = msgspec.Raw(b"[]")
    reply_to: str = ""
    reply_token: str = ""
    deadline: datetime | None = None
    enqueued_at: datetime | None = None
    attempt: int = 0
    trace_ctx: dict[str, str] = {}
    dag_id: str = ""
    step_id: str = ""
    retry_policy: RetryPolicy | None = None
    target: str = ""
    worker_id: str = ""
    timeout: float | None = None
    rate_key: str = ""
    """Which of the task's rate limits this run counts against ("" for the task-wide one)."""
    concurrency_key: str = ""
    """The call's concurrency key ("" for the task-wide one); only tasks with a limit read it."""
    queue: str = ""
    """Queue the task is routed to; empty for the default queue."""
    priority: str = ""
    """Priority band (high, normal, low); empty for normal."""


class TaskResponse(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The terminal outcome of a task, published to its ``reply_to`` subject."""

    task_id: str
    result: msgspec.Raw | None = None
    error: TaskError | None = None
    attempts: int = 0
    completed_at: datetime | None = None
    token: str = ""
    """The ``reply_token`` of the envelope answered."""


class DLQEntry(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """A dead letter: the envelope as the worker saw it, the full error, attempts and time.

    ``task`` is None when the message could not be decoded or may not run; ``raw`` then
    holds its bytes and ``raw_headers`` its header block. An entry too large for the server
    loses ``raw_headers`` and ``raw``, then ``task``, then most of the error
    message, and ``left_out`` says what went (see :func:`ebind.dlq.fit_dead_letter`).
    """

    error: TaskError
    final_attempt: int
    dead_lettered_at: StoredTime
    task: TaskEnvelope | None = None
    raw: bytes = b""
    subject: str = ""
    raw_headers: bytes = b""
    """A refused message's NATS header block as received (its signature header, say)."""
    left_out: tuple[str, ...] = ()
    """Parts cut so the entry fits the server's max_payload, each with its size and digest."""


class _TaskResponseIn(msgspec.Struct, kw_only=True, frozen=True):
    # msgspec cannot decode ``Raw | None`` (it only accepts null there), so responses are
    # decoded through this twin whose ``result`` is a plain Raw, empty when absent.
    task_id: str
    result: msgspec.Raw = msgspec.Raw(b"")
    error: TaskError | None = None
    attempts: int = 0
    completed_at: datetime | None = None
    token: str = ""


encoder = msgspec.json.Encoder()
_envelope_decoder = msgspec.json.Decoder(TaskEnvelope)
_response_decoder = msgspec.json.Decoder(_TaskResponseIn)


def decode_envelope(data: bytes) -> TaskEnvelope:
    """Decode a TaskEnvelope; raises msgspec.ValidationError / DecodeError on bad input."""
    return _envelope_decoder.decode(data)


def decode_response(data: bytes) -> TaskResponse:
    """Decode a TaskResponse (``result`` is None when the message has none)."""
    r = _response_decoder.decode(data)
    return TaskResponse(
        task_id=r.task_id,
        result=r.result if len(r.result) else None,
        error=r.error,
        attempts=r.attempts,
        completed_at=r.completed_at,
        token=r.token,
    )
