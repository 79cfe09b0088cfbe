"""Workflow wire types: step and DAG records, events, refs and placement; status enums.

JSON names are part of the wire format (``dag_id``, ``args_json``, ``optional_deps``,
``error_kind``, the ref marker key ``__ebind_ref__``). Unset times are omitted rather than
written as a zero-date placeholder.
"""

from __future__ import annotations

import enum

import msgspec

from ebind.retry import RetryPolicy
from ebind.wire import StoredTime

__all__ = [
    "DAG_EVENTS_STREAM",
    "DEFAULT_MAX_STEP_ERROR_BYTES",
    "REF_MARKER",
    "SIGNAL_MARKER",
    "BPState",
    "DAGMeta",
    "DAGStatus",
    "Event",
    "EventKind",
    "PlacementMode",
    "PlacementSpec",
    "Ref",
    "RefMode",
    "SignalRecord",
    "SignalRef",
    "StepRecord",
    "StepStatus",
]

DAG_EVENTS_STREAM = "EBIND_DAG_EVENTS"
DEFAULT_MAX_STEP_ERROR_BYTES = 4096
REF_MARKER = "__ebind_ref__"
SIGNAL_MARKER = "__ebind_signal__"


class StepStatus(str, enum.Enum):
    """Status of one step."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        """Whether the status can no longer change."""
        return self in _TERMINAL_STEP


_TERMINAL_STEP = frozenset(
    {StepStatus.DONE, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELED}
)


class DAGStatus(str, enum.Enum):
    """Overall status of a DAG."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELED = "canceled"
    PAUSING = "pausing"
    PAUSED = "paused"

    @property
    def terminal(self) -> bool:
        """Whether the DAG is finished (done, failed or canceled)."""
        return self in (DAGStatus.DONE, DAGStatus.FAILED, DAGStatus.CANCELED)


class EventKind(str, enum.Enum):
    """Scheduler event kinds (the subject token ``DAG.<dag>.<kind>.<step>``)."""

    COMPLETED = "completed"
    STEP_ADDED = "step_added"
    RESUMED = "resumed"
    SIGNAL = "signal"
    BP_HIT = "bp_hit"
    BP_RESUMED = "bp_resumed"
    SUBMITTED = "submitted"


class RefMode(str, enum.Enum):
    """What a Ref does when its upstream failed or was skipped."""

    REQUIRED = "required"
    OR_DEFAULT = "or_default"


class PlacementMode(str, enum.Enum):
    """How a step chooses its execution target."""

    DIRECT = "direct"
    COLOCATE_WITH = "colocate_with"
    FOLLOW_TARGET_OF = "follow_target_of"
    COLOCATE_HERE = "colocate_here"


class BPState(str, enum.Enum):
    """Breakpoint instance state: not hit (empty), blocked (advisory mark) or released."""

    NONE = ""
    BLOCKED = "blocked"
    RELEASED = "released"


class Ref(msgspec.Struct, kw_only=True, frozen=True):
    """A placeholder for another step's result inside a step's arguments.

    ``default`` is UNSET for a required ref; for ``or_default`` it holds the JSON to use.
    """

    marker: str = msgspec.field(default=REF_MARKER, name=REF_MARKER)
    step_id: str
    mode: RefMode = RefMode.REQUIRED
    default: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


class SignalRef(msgspec.Struct, kw_only=True, frozen=True):
    """A placeholder for a signal's payload inside a step's arguments."""

    marker: str = msgspec.field(default=SIGNAL_MARKER, name=SIGNAL_MARKER)
    name: str


class PlacementSpec(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """How a step picks its target: ``mode`` plus a ``target`` or a ``step_id``."""

    mode: PlacementMode | None = None
    target: str = ""
    step_id: str = ""


class StepRecord(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One step's persisted state (KV key ``<dag_id>.step.<step_id>``).

    ``attempt`` is the delivery attempt that currently owns the step (the attempt fence: only
    that attempt may complete it); ``generation`` identifies the enqueue: the record
    revision the dispatch (or a reconciliation re-enqueue) was written from, so every
    enqueue gets a fresh msg-id ``<dag>:<step>:<generation>``. ``dispatch_digest`` is the
    digest of the envelope that enqueue sent (``ebind.workflow.proof``), written by the
    same CAS: only a message with that digest runs the step. ``trace_ctx`` is trace
    context (e.g. W3C ``traceparent``) the step's task envelopes carry: a dynamic step
    records the span of the step that added it, so tracing links the two across processes.
    ``run_id`` is the run of the DAG the record belongs to (see DAGMeta): its result is
    stored under that run, so a DAG re-submitted with the same id never reads it.
    ``redispatches`` counts the sweep's re-sends of the current dispatch (they back off),
    and ``dispatch_seq`` is the ``EBIND_TASKS`` sequence of the last re-send (0: unknown),
    so any leader can check whether that message is still queued.

    Records are not tracked by the cycle collector (``gc=False``): a 10,000-step DAG keeps
    tens of thousands of them alive in the submitting process and in the leader, and
    every full collection walked all of them. A record refers only to strings, numbers,
    tuples and dicts of strings and a few flat structs, never to anything that can point
    back at it, so it cannot be part of a cycle; reference counting frees it. Its name
    lists are tuples (the same JSON arrays on the wire) for the same reason: the collector
    stops tracking a tuple of strings after its first pass, a list it walks every time.
    """

    dag_id: str
    step_id: str
    fn_name: str
    args_json: msgspec.Raw = msgspec.Raw(b"[]")
    deps: tuple[str, ...] = ()
    optional_deps: tuple[str, ...] = ()
    status: StepStatus
    attempt: int = 0
    generation: int = 0
    dispatch_digest: str = ""
    error_kind: str = ""
    error_message: str = ""
    optional: bool = False
    held: bool = False
    held_at: StoredTime | None = None
    break_before: tuple[str, ...] = ()
    break_after: tuple[str, ...] = ()
    bp_before: BPState = BPState.NONE
    bp_after: BPState = BPState.NONE
    bp_blocked_at: StoredTime | None = None
    wait_signals: tuple[str, ...] = ()
    policy: RetryPolicy | None = None
    placement: PlacementSpec | None = None
    target: str = ""
    worker_id: str = ""
    timeout: float | None = None
    queue: str = ""
    priority: str = ""
    added_at: StoredTime | None = None
    started_at: StoredTime | None = None
    finished_at: StoredTime | None = None
    trace_ctx: dict[str, str] = {}
    run_id: str = ""
    redispatches: int = 0
    dispatch_seq: int = 0

    def is_terminal(self) -> bool:
        """Whether this step's status can no longer change."""
        return self.status.terminal


class DAGMeta(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A DAG's meta record (KV key ``<dag_id>.meta``).

    ``run_id`` is new for every submission: results are keyed by it, so a write that a
    step of a deleted earlier run makes late can never be read by a later run of the id.
    """

    id: str
    status: DAGStatus
    created_at: StoredTime | None = None
    default_policy: RetryPolicy | None = None
    paused_at: StoredTime | None = None
    finished_at: StoredTime | None = None
    terminal_steps: list[str] = []
    active_breakpoints: list[str] = []
    labels: list[str] = []
    run_id: str = ""


class SignalRecord(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """A delivered signal (KV key ``<dag_id>.signal.<b64url(name)>``), immutable once written."""

    dag_id: str
    name: str
    payload: msgspec.Raw | None = None
    delivered_at: StoredTime | None = None


class Event(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """A scheduler event, published on ``DAG.<dag_id>.<kind>.<step_id>``."""

    kind: EventKind
    dag_id: str
    step_id: str = ""
    status: StepStatus | None = None
    error_kind: str = ""
    error_message: str = ""
    attempt: int = 0
    bp_position: str = ""
    bp_labels: list[str] = []
    signal_name: str = ""
