"""read_each (one request per record) leaves unusable records out, as the batched read does."""

from __future__ import annotations

from typing import Any, cast

import pytest
import structlog

from ebind.errors import DAGNotFound, RecordCorrupt, StepNotFound
from ebind.workflow.protocols import StateStore
from ebind.workflow.snapshot import read_each
from ebind.workflow.types import DAGMeta, DAGStatus, StepRecord, StepStatus


class _Store:
    """Answers from dicts; a value that is an exception is raised instead."""

    def __init__(self, meta: Any, steps: dict[str, Any], results: dict[str, Any]) -> None:
        self.meta, self.steps, self.results = meta, steps, results

    async def get_meta(self, dag_id: str) -> tuple[DAGMeta, int]:
        if isinstance(self.meta, BaseException):
            raise self.meta
        return cast(tuple[DAGMeta, int], self.meta)

    async def get_step(self, dag_id: str, step_id: str) -> tuple[StepRecord, int]:
        got = self.steps.get(step_id, StepNotFound(dag_id=dag_id, step_id=step_id))
        if isinstance(got, BaseException):
            raise got
        return cast(tuple[StepRecord, int], got)

    async def get_result(self, dag_id: str, step_id: str, run_id: str = "") -> bytes:
        got = self.results.get(step_id, StepNotFound(dag_id=dag_id, step_id=step_id))
        if isinstance(got, BaseException):
            raise got
        return cast(bytes, got)


def _step(sid: str) -> StepRecord:
    return StepRecord(dag_id="d", step_id=sid, fn_name="f", status=StepStatus.PENDING)


async def test_usable_records_and_absent_ones() -> None:
    meta = (DAGMeta(id="d", status=DAGStatus.RUNNING), 1)
    store = _Store(meta, {"a": (_step("a"), 2)}, {"a": b"1"})
    snap = await read_each(cast(StateStore, store), "d", ["a", "b"], ["a", "b"])
    assert snap.meta == meta
    assert list(snap.steps) == ["a"] and snap.steps["a"][1] == 2
    assert snap.results == {"a": b"1"}


async def test_missing_meta_is_absent() -> None:
    store = _Store(DAGNotFound(dag_id="d"), {}, {})
    snap = await read_each(cast(StateStore, store), "d", ["a"])
    assert snap.meta is None and snap.steps == {}
    with pytest.raises(DAGNotFound):
        snap.require_meta("d")


async def test_unusable_records_are_left_out_and_logged() -> None:
    bad_meta = RecordCorrupt("names another DAG", key="d.meta", dag_id="d")
    bad_step = RecordCorrupt("does not decode", key="d.step.b", dag_id="d", step_id="b")
    store = _Store(bad_meta, {"a": (_step("a"), 2), "b": bad_step}, {})
    with structlog.testing.capture_logs() as logs:
        snap = await read_each(cast(StateStore, store), "d", ["a", "b"])
    assert snap.meta is None
    assert list(snap.steps) == ["a"]
    with pytest.raises(StepNotFound):
        snap.require_step("d", "b")
    unusable = [e for e in logs if e["event"] == "kv.record_unusable"]
    assert {e.get("step_id", "") for e in unusable} == {"", "b"}, logs


async def test_other_errors_still_raise() -> None:
    store = _Store((DAGMeta(id="d", status=DAGStatus.RUNNING), 1), {"a": OSError("gone")}, {})
    with pytest.raises(OSError, match="gone"):
        await read_each(cast(StateStore, store), "d", ["a"])
