"""Several records of one DAG read together: its meta, some steps and some results.

A step's start and a scheduler pass each need the meta and one or more step records (and
the results the next dispatch will use). Read one by one that is a request per key; a
store that can answer them in one request (``NatsStore``: a batched direct get) does.
``read_each`` is the plain version for stores that cannot. Both leave an unusable record
out, logged, as if it were absent: a reader acts on what it could check, never on a record
that names another key or does not decode.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from ebind.errors import DAGNotFound, RecordCorrupt, StepNotFound
from ebind.logging import get_logger
from ebind.workflow.types import DAGMeta, StepRecord

if TYPE_CHECKING:
    from ebind.workflow.protocols import StateStore

__all__ = ["Snapshot", "read_each"]

_log = get_logger("ebind.workflow.store")
_T = TypeVar("_T")


@dataclass
class Snapshot:
    """What one read found; a missing record is absent (None / not in the dict)."""

    meta: tuple[DAGMeta, int] | None = None
    steps: dict[str, tuple[StepRecord, int]] = field(default_factory=dict)
    results: dict[str, bytes] = field(default_factory=dict)

    def require_meta(self, dag_id: str) -> tuple[DAGMeta, int]:
        """The meta record and revision; DAGNotFound if it was absent."""
        if self.meta is None:
            raise DAGNotFound(dag_id=dag_id)
        return self.meta

    def require_step(self, dag_id: str, step_id: str) -> tuple[StepRecord, int]:
        """One step record and revision; StepNotFound if it was absent."""
        got = self.steps.get(step_id)
        if got is None:
            raise StepNotFound(dag_id=dag_id, step_id=step_id)
        return got


async def _or_none(read: Awaitable[_T], missing: type[Exception], **where: str) -> _T | None:
    """What ``read`` returns; None if the record is missing or unusable (the latter logged)."""
    try:
        return await read
    except missing:
        return None
    except RecordCorrupt as exc:
        _log.warning("kv.record_unusable", **where, error=str(exc))
        return None


async def read_each(
    store: StateStore,
    dag_id: str,
    step_ids: Sequence[str],
    result_ids: Sequence[str] = (),
    run_id: str = "",
) -> Snapshot:
    """``read_dag`` with one request per record (all in flight at once)."""
    got_meta, got_steps, got_results = await asyncio.gather(
        _or_none(store.get_meta(dag_id), DAGNotFound, dag_id=dag_id),
        asyncio.gather(
            *(
                _or_none(store.get_step(dag_id, s), StepNotFound, dag_id=dag_id, step_id=s)
                for s in step_ids
            )
        ),
        asyncio.gather(
            *(_or_none(store.get_result(dag_id, s, run_id), StepNotFound) for s in result_ids)
        ),
    )
    snap = Snapshot(meta=got_meta)
    for sid, rec in zip(step_ids, got_steps, strict=True):
        if rec is not None:
            snap.steps[sid] = rec
    for sid, data in zip(result_ids, got_results, strict=True):
        if data is not None:
            snap.results[sid] = data
    return snap
