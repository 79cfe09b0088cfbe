"""Which deliveries of a DAG step may run: the scheduler's dispatch, proven by its digest.

Anyone allowed to publish on ``TASKS.>`` can write a message naming a DAG's ``dag_id`` and
``step_id``. Such a message must not run the step, least of all with its own arguments:
the step may be waiting on a signal, behind a breakpoint or its dependencies, or its DAG
paused or canceled, and dependents would consume the forged result. So the dispatch (and
every re-enqueue by the sweep) records in the step record, in the same CAS that turns it
``running``, the generation it sent and a digest of the envelope it sent
(:func:`dispatch_digest`). A delivery is *proven* when the record is ``running`` at that
generation with that digest. Everything else is classified by :func:`step_verdict`,
a pure function of the record, its revision, the DAG's status and the delivery's
generation and digest.
"""

from __future__ import annotations

import enum
import hashlib

import msgspec

from ebind.wire import TaskEnvelope
from ebind.workflow.types import DAGStatus, StepRecord, StepStatus

__all__ = [
    "GENERATION_KEY",
    "StepVerdict",
    "dispatch_digest",
    "envelope_generation",
    "step_verdict",
]

GENERATION_KEY = "ebind-generation"
"""``trace_ctx`` key carrying the step generation a task message was enqueued for."""

_encode = msgspec.json.Encoder().encode


def envelope_generation(env: TaskEnvelope) -> int | None:
    """The step generation an envelope was enqueued for (None when absent or not a number)."""
    raw = env.trace_ctx.get(GENERATION_KEY)
    # Revisions are stream sequences (u64): more digits than that is not a generation.
    if raw is None or not raw.isascii() or not raw.isdigit() or len(raw) > 20:
        return None
    return int(raw)


def dispatch_digest(env: TaskEnvelope) -> str:
    """Hex digest of every envelope field that decides what a step's run does.

    Covered: id, name, the payload bytes as published, reply subject, deadline, DAG and
    step ids, retry policy, target, timeout and the generation. Left out are the fields a
    worker fills in (``attempt``, ``worker_id``), ``enqueued_at`` (a re-send of the same
    dispatch by the sweep gets a new one) and trace-context keys other than the generation
    (publish hooks, e.g. OpenTelemetry, add them after the dispatch computed the digest;
    they only label spans).
    """
    fields = (
        env.id,
        env.name,
        env.payload,
        env.reply_to,
        env.deadline,
        env.dag_id,
        env.step_id,
        env.retry_policy,
        env.target,
        env.timeout,
        env.trace_ctx.get(GENERATION_KEY),
    )
    return hashlib.blake2b(_encode(fields), digest_size=16).hexdigest()


class StepVerdict(enum.Enum):
    """What the worker does with one delivery of a DAG step."""

    RUN = "run"
    """The scheduler's current dispatch: claim the step and run the handler."""
    CANCELED = "canceled"
    """The current dispatch of a step whose DAG was canceled before it started: cancel it."""
    TERMINAL = "terminal"
    """A redelivery of a finished step: republish its completion, then drop the message."""
    STALE = "stale"
    """A dispatch the record has moved past (superseded or lost its CAS): drop quietly."""
    ORPHAN = "orphan"
    """Neither the step nor its DAG exists (deleted): drop quietly."""
    BEHIND = "behind"
    """The record read is older than the message: read again (a replica lagging)."""
    AWAIT = "await"
    """The dispatch's own CAS may still be in flight: read again, later nak with a delay."""
    UNPROVEN = "unproven"
    """Not a dispatch the scheduler made: dead-letter the raw message, change nothing."""


def step_verdict(
    got: tuple[StepRecord, int] | None,
    meta: DAGStatus | None,
    gen: int | None,
    digest: str,
) -> tuple[StepVerdict, str]:
    """Classify one delivery of a step; the text says why when the verdict is UNPROVEN.

    ``got`` is the step record and its revision as read (None: absent), ``meta`` the
    DAG's status (None: absent), ``gen`` and ``digest`` the delivery's.

    A generation is the record revision its dispatch was written from, and that dispatch
    writes ``generation`` and ``dispatch_digest`` in the CAS that makes the step running.
    So a record at that generation tells whether the message is that dispatch; a message
    whose generation is below the record's belongs to a superseded dispatch (stale); one
    whose generation the record has not recorded is stale if the record was written past
    that revision (the dispatch's CAS lost), in flight if the record still sits at it, and
    behind if the record read is older.
    """
    if gen is None:
        return StepVerdict.UNPROVEN, "the message carries no dispatch generation"
    if got is None:
        # A step that is not there yet while its DAG exists: a replica behind its creation.
        return (StepVerdict.BEHIND if meta is not None else StepVerdict.ORPHAN), ""
    rec, rev = got
    if gen < rec.generation:
        return (StepVerdict.TERMINAL if rec.is_terminal() else StepVerdict.STALE), ""
    if gen == rec.generation:
        return _same_generation(rec, meta, gen, digest)
    if rev < gen:
        return StepVerdict.BEHIND, ""
    if rev > gen:
        return StepVerdict.STALE, ""
    return _at_dispatch_revision(rec, gen)


def _same_generation(
    rec: StepRecord, meta: DAGStatus | None, gen: int, digest: str
) -> tuple[StepVerdict, str]:
    if rec.status is StepStatus.PENDING:
        return StepVerdict.UNPROVEN, f"step is pending, never dispatched at generation {gen}"
    if not rec.dispatch_digest:
        return StepVerdict.UNPROVEN, f"no dispatch digest recorded at generation {gen}"
    if digest != rec.dispatch_digest:
        return (
            StepVerdict.UNPROVEN,
            f"the message differs from the envelope dispatched at generation {gen} "
            "(arguments, target, timeout or retry policy changed)",
        )
    if rec.is_terminal():
        return StepVerdict.TERMINAL, ""
    if meta is DAGStatus.CANCELED:
        return StepVerdict.CANCELED, ""
    return StepVerdict.RUN, ""


def _at_dispatch_revision(rec: StepRecord, gen: int) -> tuple[StepVerdict, str]:
    """The record still sits at the revision the message claims its dispatch started from."""
    if rec.is_terminal():
        return StepVerdict.UNPROVEN, f"step is {rec.status.value}; no dispatch starts from it"
    if rec.held:
        return StepVerdict.UNPROVEN, "step is held by a pause; no dispatch starts from it"
    # A pending record: the dispatch's CAS may travel beside its message. A running one:
    # the sweep's re-enqueue publishes its new generation, then records it (with the
    # message's sequence), so the record can still sit at the revision it writes from.
    return StepVerdict.AWAIT, ""
