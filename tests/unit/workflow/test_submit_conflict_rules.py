"""The pure rule submit applies to a step record already stored under the DAG's id."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from ebind.workflow.resubmit import StepConflict, step_conflict, stray_steps
from ebind.workflow.types import DAGMeta, DAGStatus, StepRecord, StepStatus


def _rec(run_id: str, **changes: object) -> StepRecord:
    rec = StepRecord(
        dag_id="nightly",
        step_id="a",
        fn_name="f",
        status=StepStatus.PENDING,
        args_json=msgspec.Raw(b"[1]"),
        added_at=datetime(2026, 12, 1, tzinfo=UTC),
        run_id=run_id,
    )
    return msgspec.structs.replace(rec, **changes)


def test_our_own_landed_create_is_kept_whenever_it_was_built() -> None:
    later = datetime(2026, 12, 2, tzinfo=UTC)
    assert step_conflict(_rec("b"), _rec("b", added_at=later), False) is StepConflict.OWN
    assert step_conflict(_rec("b"), _rec("b"), True) is StepConflict.OWN


def test_an_abandoned_record_with_a_larger_run_is_taken_over() -> None:
    assert step_conflict(_rec("b"), _rec("a"), False) is StepConflict.TAKE_OVER


def test_an_abandoned_record_with_a_smaller_run_is_adopted() -> None:
    assert step_conflict(_rec("a"), _rec("b"), False) is StepConflict.ADOPT


def test_both_racers_settle_on_the_smaller_run() -> None:
    first, second = _rec("a"), _rec("b")
    assert step_conflict(first, second, False) is StepConflict.ADOPT  # b resubmits as a
    assert step_conflict(second, first, False) is StepConflict.TAKE_OVER  # a overwrites b


def test_a_record_of_a_committed_dag_is_never_reused() -> None:
    assert step_conflict(_rec("b"), _rec("a"), True) is StepConflict.REFUSE
    assert step_conflict(_rec("a"), _rec("b"), True) is StepConflict.REFUSE


@pytest.mark.parametrize(
    "status", [s for s in StepStatus if s is not StepStatus.PENDING], ids=lambda s: s.value
)
def test_a_record_that_moved_past_pending_is_refused(status: StepStatus) -> None:
    assert step_conflict(_rec("b", status=status), _rec("a"), False) is StepConflict.REFUSE
    assert step_conflict(_rec("a", status=status), _rec("a"), False) is StepConflict.REFUSE


@pytest.mark.parametrize("run", ["a", "b", "c"])
def test_another_definition_under_the_same_id_is_refused(run: str) -> None:
    other = _rec(run, args_json=msgspec.Raw(b"[2]"))
    assert step_conflict(other, _rec("b"), False) is StepConflict.REFUSE
    renamed = _rec(run, fn_name="g")
    assert step_conflict(renamed, _rec("b"), False) is StepConflict.REFUSE


def _meta(run_id: str) -> DAGMeta:
    return DAGMeta(id="nightly", status=DAGStatus.RUNNING, run_id=run_id)


def test_a_pending_step_under_another_run_is_put_back_under_the_meta_run() -> None:
    stray = _rec("a", step_id="b")
    got = stray_steps(_meta("b"), [_rec("b"), stray])
    assert got == [msgspec.structs.replace(stray, run_id="b")]


@pytest.mark.parametrize(
    "status", [s for s in StepStatus if s is not StepStatus.PENDING], ids=lambda s: s.value
)
def test_a_step_that_moved_on_is_never_rewritten(status: StepStatus) -> None:
    assert stray_steps(_meta("b"), [_rec("a", status=status)]) == []


def test_steps_of_the_meta_run_and_dags_without_runs_have_no_strays() -> None:
    assert stray_steps(_meta("b"), [_rec("b"), _rec("b", step_id="c")]) == []
    assert stray_steps(_meta(""), [_rec("a")]) == []
