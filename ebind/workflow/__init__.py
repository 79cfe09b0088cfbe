"""Durable DAG workflows on NATS JetStream: ``DAG``, ``Workflow``, dynamic steps, signals.

Every exported name of the Go seed has its counterpart here (see docs/architecture.md).
"""

from __future__ import annotations

from ebind.worker.hook import StepHook as StepHookProtocol
from ebind.workflow.bus_mem import MemBus
from ebind.workflow.bus_nats import NatsBus
from ebind.workflow.context import (
    ContextDAG,
    context_middleware,
    current_target,
    current_worker_id,
    from_context,
)
from ebind.workflow.dag import DAG, Step
from ebind.workflow.debug import (
    BreakpointInfo,
    DAGDebug,
    SignalInfo,
    StepBlocker,
    StepDebug,
    build_debug,
    compute_breakpoints,
    compute_signals,
    count_blocked,
    count_waiting_steps,
    matches_labels,
    write_debug,
)
from ebind.workflow.enqueuer import CaptureEnqueuer, NatsEnqueuer
from ebind.workflow.events import event_subject, marshal_event, unmarshal_event
from ebind.workflow.hook import StepHook, truncate_error
from ebind.workflow.leader import AlwaysLeader, KVLeaseElector
from ebind.workflow.liveness import Liveness, MemLiveness, NatsLiveness
from ebind.workflow.protocols import (
    Delivery,
    Enqueuer,
    EventBus,
    LeaderElector,
    StateStore,
    Subscription,
)
from ebind.workflow.ref import decode_ref, find_refs, is_ref, resolve_args, signal_ref
from ebind.workflow.scheduler import Scheduler
from ebind.workflow.state import DAGState
from ebind.workflow.store_mem import MemStore
from ebind.workflow.store_nats import NatsStore
from ebind.workflow.types import (
    DAG_EVENTS_STREAM,
    DEFAULT_MAX_STEP_ERROR_BYTES,
    BPState,
    DAGMeta,
    DAGStatus,
    Event,
    EventKind,
    PlacementMode,
    PlacementSpec,
    Ref,
    RefMode,
    SignalRecord,
    SignalRef,
    StepRecord,
    StepStatus,
)
from ebind.workflow.workflow import Workflow

__all__ = [
    "DAG",
    "DAG_EVENTS_STREAM",
    "DEFAULT_MAX_STEP_ERROR_BYTES",
    "AlwaysLeader",
    "BPState",
    "BreakpointInfo",
    "CaptureEnqueuer",
    "ContextDAG",
    "DAGDebug",
    "DAGMeta",
    "DAGState",
    "DAGStatus",
    "Delivery",
    "Enqueuer",
    "Event",
    "EventBus",
    "EventKind",
    "KVLeaseElector",
    "LeaderElector",
    "Liveness",
    "MemBus",
    "MemLiveness",
    "MemStore",
    "NatsBus",
    "NatsEnqueuer",
    "NatsLiveness",
    "NatsStore",
    "PlacementMode",
    "PlacementSpec",
    "Ref",
    "RefMode",
    "Scheduler",
    "SignalInfo",
    "SignalRecord",
    "SignalRef",
    "StateStore",
    "Step",
    "StepBlocker",
    "StepDebug",
    "StepHook",
    "StepHookProtocol",
    "StepRecord",
    "StepStatus",
    "Subscription",
    "Workflow",
    "build_debug",
    "compute_breakpoints",
    "compute_signals",
    "context_middleware",
    "count_blocked",
    "count_waiting_steps",
    "current_target",
    "current_worker_id",
    "decode_ref",
    "event_subject",
    "find_refs",
    "from_context",
    "is_ref",
    "marshal_event",
    "matches_labels",
    "resolve_args",
    "signal_ref",
    "truncate_error",
    "unmarshal_event",
    "write_debug",
]
