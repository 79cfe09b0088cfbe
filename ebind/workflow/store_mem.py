"""MemStore: an in-memory StateStore with the exact contract of NatsStore, for tests.

Records are stored encoded (so a caller mutating a returned record changes nothing), each
key has its own revision counter that starts at 1 and keeps counting across deletes (so
a delete + re-create never re-issues an old revision), and every operation yields to the
event loop once before its atomic section, so concurrent callers interleave the way
they would against a server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from ebind.errors import DAGNotFound, RecordCorrupt, SignalNotFound, StaleRevision, StepNotFound
from ebind.workflow import _keys
from ebind.workflow._records import meta_for_key, step_for_key
from ebind.workflow.snapshot import Snapshot, read_each
from ebind.workflow.types import DAGMeta, SignalRecord, StepRecord

__all__ = ["FaultHook", "MemStore"]

FaultHook = Callable[[str, str], None]
"""Called as ``hook(operation, key)`` before each operation; raise to inject a fault."""

_enc = msgspec.json.Encoder()


@dataclass
class _Slot:
    """One key: its current value (None once deleted) and its revision counter."""

    value: bytes | None = None
    rev: int = 0


@dataclass
class _DagKeys:
    """Every key of one DAG, indexed so per-DAG listings never touch other DAGs."""

    meta: _Slot = field(default_factory=_Slot)
    steps: dict[str, _Slot] = field(default_factory=dict)
    results: dict[str, _Slot] = field(default_factory=dict)
    """By full result key: a DAG run's results never share a slot with another run's."""
    signals: dict[str, _Slot] = field(default_factory=dict)
    result_waiters: dict[str, list[asyncio.Future[bytes]]] = field(default_factory=dict)


def _cas(slot: _Slot, data: bytes, expected_rev: int, *, dag_id: str, step_id: str = "") -> int:
    current = slot.rev if slot.value is not None else 0
    if current != expected_rev:
        raise StaleRevision(
            f"workflow: stale revision (expected {expected_rev}, found {current})",
            dag_id=dag_id,
            step_id=step_id,
        )
    slot.value = data
    slot.rev += 1
    return slot.rev


class MemStore:
    """In-memory StateStore: per-key revisions, CAS, create-only results and signals.

    Args:
        faults: optional hook called as ``faults(operation, key)`` before every operation
            (``operation`` is the method name); whatever it raises is raised to the caller,
            which lets simulations inject StaleRevision or IO errors.
    """

    def __init__(self, *, faults: FaultHook | None = None) -> None:
        self._dags: dict[str, _DagKeys] = {}
        self._live: dict[str, bytes] = {}
        self._faults = faults

    async def _enter(self, op: str, key: str) -> None:
        # One scheduling point per call, like a network round trip, so that concurrent
        # read-modify-write cycles interleave and lost updates would show up in tests.
        await asyncio.sleep(0)
        if self._faults is not None:
            self._faults(op, key)

    def _dag(self, dag_id: str) -> _DagKeys:
        keys = self._dags.get(dag_id)
        if keys is None:
            keys = self._dags[dag_id] = _DagKeys()
        return keys

    # -- meta --------------------------------------------------------------------------

    async def get_meta(self, dag_id: str) -> tuple[DAGMeta, int]:
        """Meta record and its revision."""
        await self._enter("get_meta", _keys.meta_key(dag_id))
        keys = self._dags.get(dag_id)
        if keys is None or keys.meta.value is None:
            raise DAGNotFound(dag_id=dag_id)
        return meta_for_key(keys.meta.value, dag_id, _keys.meta_key(dag_id)), keys.meta.rev

    async def put_meta(self, dag_id: str, meta: DAGMeta, expected_rev: int) -> int:
        """CAS-write the meta record; returns the new revision."""
        await self._enter("put_meta", _keys.meta_key(dag_id))
        return _cas(self._dag(dag_id).meta, _enc.encode(meta), expected_rev, dag_id=dag_id)

    async def list_dags(self) -> list[DAGMeta]:
        """Every DAG's meta record, sorted by DAG id."""
        await self._enter("list_dags", "*.meta")
        out: list[DAGMeta] = []
        for dag_id, keys in sorted(self._dags.items()):
            if keys.meta.value is not None:
                with contextlib.suppress(RecordCorrupt):  # left out, as NatsStore does
                    out.append(meta_for_key(keys.meta.value, dag_id, _keys.meta_key(dag_id)))
        return out

    async def delete_meta(self, dag_id: str) -> None:
        """Remove the meta record (idempotent)."""
        await self._enter("delete_meta", _keys.meta_key(dag_id))
        keys = self._dags.get(dag_id)
        if keys is not None:
            keys.meta.value = None

    # -- steps -------------------------------------------------------------------------

    async def get_step(self, dag_id: str, step_id: str) -> tuple[StepRecord, int]:
        """Step record and its revision."""
        await self._enter("get_step", _keys.step_key(dag_id, step_id))
        keys = self._dags.get(dag_id)
        slot = keys.steps.get(step_id) if keys is not None else None
        if slot is None or slot.value is None:
            raise StepNotFound(dag_id=dag_id, step_id=step_id)
        return step_for_key(slot.value, dag_id, step_id, _keys.step_key(dag_id, step_id)), slot.rev

    async def put_step(self, dag_id: str, step_id: str, rec: StepRecord, expected_rev: int) -> int:
        """CAS-write a step record; returns the new revision."""
        await self._enter("put_step", _keys.step_key(dag_id, step_id))
        steps = self._dag(dag_id).steps
        slot = steps.get(step_id)
        if slot is None:
            slot = steps[step_id] = _Slot()
        return _cas(slot, _enc.encode(rec), expected_rev, dag_id=dag_id, step_id=step_id)

    async def list_steps(self, dag_id: str) -> list[tuple[StepRecord, int]]:
        """All step records of one DAG with their revisions, sorted by step id."""
        await self._enter("list_steps", _keys.step_prefix(dag_id) + ">")
        keys = self._dags.get(dag_id)
        if keys is None:
            return []
        out: list[tuple[StepRecord, int]] = []
        for step_id, slot in sorted(keys.steps.items()):
            if slot.value is not None:
                with contextlib.suppress(RecordCorrupt):  # left out, as NatsStore does
                    key = _keys.step_key(dag_id, step_id)
                    out.append((step_for_key(slot.value, dag_id, step_id, key), slot.rev))
        return out

    async def delete_step(self, dag_id: str, step_id: str) -> None:
        """Remove a step record (idempotent)."""
        await self._enter("delete_step", _keys.step_key(dag_id, step_id))
        keys = self._dags.get(dag_id)
        slot = keys.steps.get(step_id) if keys is not None else None
        if slot is not None:
            slot.value = None

    # -- results -----------------------------------------------------------------------

    async def get_result(self, dag_id: str, step_id: str, run_id: str = "") -> bytes:
        """A step's result bytes (JSON), stored under the DAG run ``run_id``."""
        key = _keys.result_key(dag_id, step_id, run_id)
        await self._enter("get_result", key)
        keys = self._dags.get(dag_id)
        slot = keys.results.get(key) if keys is not None else None
        if slot is None or slot.value is None:
            raise StepNotFound(
                f"workflow: no result for step {step_id!r}", dag_id=dag_id, step_id=step_id
            )
        return slot.value

    async def read_dag(
        self,
        dag_id: str,
        step_ids: Sequence[str],
        result_ids: Sequence[str] = (),
        run_id: str = "",
    ) -> Snapshot:
        """The meta, some steps and some results, each read as its own get would."""
        return await read_each(self, dag_id, step_ids, result_ids, run_id)

    async def put_result(self, dag_id: str, step_id: str, data: bytes, run_id: str = "") -> None:
        """Write a result once; identical bytes are fine, different ones raise StaleRevision."""
        key = _keys.result_key(dag_id, step_id, run_id)
        await self._enter("put_result", key)
        data = bytes(data)
        keys = self._dag(dag_id)
        slot = keys.results.get(key)
        if slot is None:
            slot = keys.results[key] = _Slot()
        if slot.value is not None:
            if slot.value == data:
                return
            raise StaleRevision(
                "workflow: a different result is already stored", dag_id=dag_id, step_id=step_id
            )
        slot.value = data
        slot.rev += 1
        for fut in keys.result_waiters.pop(key, []):
            if not fut.done():
                fut.set_result(data)

    async def watch_result(
        self, dag_id: str, step_id: str, run_id: str = ""
    ) -> AsyncIterator[bytes]:
        """Yield the result once it exists (immediately if it already does), then stop."""
        key = _keys.result_key(dag_id, step_id, run_id)
        await self._enter("watch_result", key)
        keys = self._dag(dag_id)
        slot = keys.results.get(key)
        if slot is not None and slot.value is not None:
            yield slot.value
            return
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        waiters = keys.result_waiters.setdefault(key, [])
        waiters.append(fut)
        try:
            data = await fut
        finally:
            # Unregister before yielding, so a consumer that never closes the generator
            # leaves nothing behind.
            if fut in waiters:
                waiters.remove(fut)
            if not waiters:
                keys.result_waiters.pop(key, None)
        yield data

    async def delete_result(self, dag_id: str, step_id: str, run_id: str = "") -> None:
        """Remove a result (idempotent)."""
        key = _keys.result_key(dag_id, step_id, run_id)
        await self._enter("delete_result", key)
        keys = self._dags.get(dag_id)
        slot = keys.results.get(key) if keys is not None else None
        if slot is not None:
            slot.value = None

    # -- signals -----------------------------------------------------------------------

    async def get_signal(self, dag_id: str, name: str) -> SignalRecord:
        """One delivered signal."""
        await self._enter("get_signal", _keys.signal_key(dag_id, name))
        keys = self._dags.get(dag_id)
        slot = keys.signals.get(name) if keys is not None else None
        if slot is None or slot.value is None:
            raise SignalNotFound(f"workflow: signal {name!r} not found", dag_id=dag_id)
        return _keys.decode_signal(slot.value)

    async def put_signal(self, dag_id: str, rec: SignalRecord) -> None:
        """Create a signal record; raises StaleRevision if one exists (first wins)."""
        await self._enter("put_signal", _keys.signal_key(dag_id, rec.name))
        signals = self._dag(dag_id).signals
        slot = signals.get(rec.name)
        if slot is None:
            slot = signals[rec.name] = _Slot()
        _cas(slot, _enc.encode(rec), 0, dag_id=dag_id)

    async def list_signals(self, dag_id: str) -> list[SignalRecord]:
        """All delivered signals of one DAG, sorted by name."""
        await self._enter("list_signals", _keys.signal_prefix(dag_id) + ">")
        keys = self._dags.get(dag_id)
        if keys is None:
            return []
        return [
            _keys.decode_signal(slot.value)
            for _, slot in sorted(keys.signals.items())
            if slot.value is not None
        ]

    async def delete_signal(self, dag_id: str, name: str) -> None:
        """Remove a signal record (idempotent)."""
        await self._enter("delete_signal", _keys.signal_key(dag_id, name))
        keys = self._dags.get(dag_id)
        slot = keys.signals.get(name) if keys is not None else None
        if slot is not None:
            slot.value = None

    # -- live index and history ----------------------------------------------------------

    async def put_live(self, dag_id: str, data: bytes) -> None:
        """Write the DAG's live-index entry (overwrites)."""
        await self._enter("put_live", _keys.live_key(dag_id))
        self._live[dag_id] = bytes(data)

    async def delete_live(self, dag_id: str) -> None:
        """Remove the DAG's live-index entry (idempotent)."""
        await self._enter("delete_live", _keys.live_key(dag_id))
        self._live.pop(dag_id, None)

    async def list_live(self) -> list[tuple[str, bytes]]:
        """Every live-index entry as (DAG id, value), sorted by DAG id."""
        await self._enter("list_live", _keys.live_prefix() + "*")
        return sorted(self._live.items())

    async def delete_dag_keys(self, dag_id: str) -> int:
        """Delete every key of one DAG, the meta last; returns how many were live."""
        await self._enter("delete_dag_keys", f"{_keys.check_dag(dag_id)}.>")
        keys = self._dags.get(dag_id)
        if keys is None:
            return 0
        slots = [*keys.steps.values(), *keys.results.values(), *keys.signals.values(), keys.meta]
        live = [slot for slot in slots if slot.value is not None]
        for slot in live:
            slot.value = None
        return len(live)

    async def purge_dag(self, dag_id: str) -> None:
        """Remove every key of one DAG; revision counters keep counting, as after deletes."""
        await self._enter("purge_dag", f"{_keys.check_dag(dag_id)}.>")
        keys = self._dags.get(dag_id)
        if keys is None:
            return
        for slot in (keys.meta, *keys.steps.values(), *keys.results.values()):
            slot.value = None
        for slot in keys.signals.values():
            slot.value = None
