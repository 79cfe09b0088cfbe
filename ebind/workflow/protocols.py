"""The IO seams of the workflow engine, as Protocols: StateStore, EventBus, Enqueuer, LeaderElector.

Each has a ``Mem*`` implementation for unit tests and a ``Nats*`` one for real use; both
pass the suite in ``tests/contract``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

from ebind._jsreq import PubAck
from ebind.wire import TaskEnvelope
from ebind.workflow.snapshot import Snapshot
from ebind.workflow.types import DAGMeta, Event, SignalRecord, StepRecord

__all__ = [
    "Delivery",
    "Enqueuer",
    "EventBus",
    "EventHandler",
    "LeaderElector",
    "StateStore",
    "Subscription",
]


class StateStore(Protocol):
    """Persists DAG meta, step, result and signal records with compare-and-set.

    ``put_*(..., expected_rev)`` raises StaleRevision when the stored revision differs;
    ``expected_rev == 0`` means create-if-absent. Every put returns the new revision, so
    callers never read back their own write. Missing meta raises DAGNotFound; a missing
    step or result raises StepNotFound; a missing signal raises SignalNotFound.
    """

    async def get_meta(self, dag_id: str) -> tuple[DAGMeta, int]:
        """Meta record and its revision."""
        ...

    async def put_meta(self, dag_id: str, meta: DAGMeta, expected_rev: int) -> int:
        """CAS-write the meta record; returns the new revision."""
        ...

    async def list_dags(self) -> list[DAGMeta]:
        """Every DAG's meta record."""
        ...

    async def get_step(self, dag_id: str, step_id: str) -> tuple[StepRecord, int]:
        """Step record and its revision."""
        ...

    async def put_step(self, dag_id: str, step_id: str, rec: StepRecord, expected_rev: int) -> int:
        """CAS-write a step record; returns the new revision."""
        ...

    async def list_steps(self, dag_id: str) -> list[tuple[StepRecord, int]]:
        """All step records of one DAG with their revisions (never a scan of the bucket)."""
        ...

    async def get_result(self, dag_id: str, step_id: str, run_id: str = "") -> bytes:
        """A step's result bytes (JSON), stored under the DAG run ``run_id``."""
        ...

    async def read_dag(
        self,
        dag_id: str,
        step_ids: Sequence[str],
        result_ids: Sequence[str] = (),
        run_id: str = "",
    ) -> Snapshot:
        """The meta, the steps ``step_ids`` and the results ``result_ids`` (run ``run_id``).

        Missing records are absent from the Snapshot, never an error.
        """
        ...

    async def put_result(self, dag_id: str, step_id: str, data: bytes, run_id: str = "") -> None:
        """Write a result once; identical bytes are fine, different ones raise StaleRevision."""
        ...

    def watch_result(self, dag_id: str, step_id: str, run_id: str = "") -> AsyncIterator[bytes]:
        """Yield the result once it exists (immediately if it already does), then stop.

        An async generator (``async for data in store.watch_result(...)``), not a coroutine;
        cancel the loop (e.g. with ``asyncio.timeout``) to give up waiting.
        """
        ...

    async def get_signal(self, dag_id: str, name: str) -> SignalRecord:
        """One delivered signal."""
        ...

    async def put_signal(self, dag_id: str, rec: SignalRecord) -> None:
        """Create a signal record; raises StaleRevision if one exists (first wins)."""
        ...

    async def list_signals(self, dag_id: str) -> list[SignalRecord]:
        """All delivered signals of one DAG."""
        ...

    async def delete_meta(self, dag_id: str) -> None:
        """Remove the meta record (idempotent)."""
        ...

    async def delete_step(self, dag_id: str, step_id: str) -> None:
        """Remove a step record (idempotent)."""
        ...

    async def delete_result(self, dag_id: str, step_id: str, run_id: str = "") -> None:
        """Remove a result (idempotent)."""
        ...

    async def delete_signal(self, dag_id: str, name: str) -> None:
        """Remove a signal record (idempotent)."""
        ...

    async def put_live(self, dag_id: str, data: bytes) -> None:
        """Write the DAG's live-index entry (overwrites)."""
        ...

    async def delete_live(self, dag_id: str) -> None:
        """Remove the DAG's live-index entry without leaving a lasting tombstone."""
        ...

    async def list_live(self) -> list[tuple[str, bytes]]:
        """Every live-index entry as (DAG id, value); costs what the live DAGs cost."""
        ...

    async def purge_dag(self, dag_id: str) -> None:
        """Remove every key of one DAG (meta, steps, results, signals) without tombstones."""
        ...

    async def delete_dag_keys(self, dag_id: str) -> int:
        """Delete every key of one DAG one by one, the meta last; returns how many.

        Unlike :meth:`purge_dag` it needs only the right to write the bucket, and it reads
        no record, so it also removes records no reader could use.
        """
        ...


class Delivery(Protocol):
    """Acknowledgement handle of one delivered event."""

    async def ack(self) -> None:
        """The event was handled."""
        ...

    async def nak(self, delay: float | None = None) -> None:
        """Redeliver the event after ``delay`` seconds."""
        ...

    async def term(self) -> None:
        """Never redeliver (poison event)."""
        ...


EventHandler = Callable[[Event, Delivery], Awaitable[None]]


class Subscription(Protocol):
    """A running event subscription."""

    async def stop(self) -> None:
        """Stop delivering events."""
        ...


class EventBus(Protocol):
    """Carries scheduler events between processes; each event reaches one subscriber."""

    async def publish(self, subject: str, data: bytes) -> None:
        """Publish one encoded event on ``DAG.<dag>.<kind>.<step>``."""
        ...

    async def subscribe(self, filter_subject: str, handler: EventHandler) -> Subscription:
        """Deliver matching events to ``handler``, which must ack, nak or term each."""
        ...


class Enqueuer(Protocol):
    """Places a ready step's task envelope on the TASKS stream."""

    async def enqueue(self, envelope: TaskEnvelope, *, msg_id: str | None = None) -> PubAck | None:
        """Publish ``envelope`` with ``msg_id`` (default: envelope.id) for dedupe.

        Returns the server's PubAck (stream sequence, duplicate flag) when known.
        """
        ...


class LeaderElector(Protocol):
    """Says whether this process may drive scheduler state changes."""

    def is_leader(self) -> bool:
        """True while this process holds leadership."""
        ...
