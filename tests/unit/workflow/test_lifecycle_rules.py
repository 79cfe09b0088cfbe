"""Pure lifecycle rules: live-index upkeep, history collection, retry plans and resets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from ebind.errors import RetryRefused, StepNotFound
from ebind.workflow.lifecycle import (
    LIVE_GRACE,
    LiveEntry,
    collectable,
    decode_live,
    encode_live,
    fresh_entry,
    live_entry_removable,
    new_run_id,
    reset_for_retry,
    retry_plan,
    retry_roots,
    retryable_dag,
)
from ebind.workflow.types import DAGMeta, DAGStatus, StepRecord, StepStatus

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def meta(status: DAGStatus, finished: datetime | None = None, **kw: object) -> DAGMeta:
    return DAGMeta(id="d", status=status, finished_at=finished, **kw)  # type: ignore[arg-type]


def step(
    sid: str, status: StepStatus, deps: tuple[str, ...] = (), opt: tuple[str, ...] = ()
) -> StepRecord:
    return StepRecord(
        dag_id="d",
        step_id=sid,
        fn_name="f",
        status=status,
        deps=tuple(deps),
        optional_deps=tuple(opt),
    )


# --- live index ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [DAGStatus.RUNNING, DAGStatus.PAUSING, DAGStatus.PAUSED])
def test_entry_of_an_unfinished_dag_is_never_removed(status: DAGStatus) -> None:
    entry = LiveEntry(at=ago(10 * LIVE_GRACE))
    assert not live_entry_removable(entry, meta(status), NOW)


def test_entry_of_a_dag_that_finished_after_it_was_written_goes_at_once() -> None:
    entry = LiveEntry(at=ago(5))
    assert live_entry_removable(entry, meta(DAGStatus.DONE, ago(1)), NOW)


def test_entry_written_after_the_finish_is_a_retry_under_way_and_stays() -> None:
    entry = LiveEntry(at=ago(1))
    assert not live_entry_removable(entry, meta(DAGStatus.FAILED, ago(5)), NOW)
    # ...unless the retry died long ago: the grace period ends it.
    old = LiveEntry(at=ago(LIVE_GRACE + 1))
    assert live_entry_removable(old, meta(DAGStatus.FAILED, ago(LIVE_GRACE + 5)), NOW)


def test_entry_of_a_missing_dag_waits_for_the_submit_to_write_its_meta() -> None:
    assert not live_entry_removable(LiveEntry(at=ago(1)), None, NOW)
    assert live_entry_removable(LiveEntry(at=ago(LIVE_GRACE)), None, NOW)


def test_unreadable_entry_goes_once_the_dag_is_not_live() -> None:
    assert live_entry_removable(None, None, NOW)
    assert live_entry_removable(None, meta(DAGStatus.DONE, ago(1)), NOW)
    assert not live_entry_removable(None, meta(DAGStatus.RUNNING), NOW)


def test_finished_meta_without_finish_time_ages_with_the_entry() -> None:
    assert not live_entry_removable(LiveEntry(at=ago(1)), meta(DAGStatus.CANCELED), NOW)
    assert live_entry_removable(LiveEntry(at=ago(LIVE_GRACE)), meta(DAGStatus.CANCELED), NOW)


def test_fresh_entries_are_left_to_their_writer() -> None:
    assert fresh_entry(LiveEntry(at=ago(0.2)), NOW)
    assert not fresh_entry(LiveEntry(at=ago(5)), NOW)
    assert not fresh_entry(None, NOW)
    assert not fresh_entry(LiveEntry(at=NOW + timedelta(seconds=30)), NOW)  # clock skew


def test_live_entry_round_trip_and_garbage() -> None:
    entry = LiveEntry(at=NOW, run_id="abc")
    assert decode_live(encode_live(entry)) == entry
    assert decode_live(b"not json") is None
    assert decode_live(b'{"run_id": "x"}') is None


def test_run_ids_are_fresh_valid_id_tokens() -> None:
    ids = {new_run_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 16 and i.isalnum() for i in ids)


# --- history -------------------------------------------------------------------------


def test_collectable_only_after_the_retention() -> None:
    assert collectable(meta(DAGStatus.DONE, ago(3600)), NOW, 60)
    assert collectable(meta(DAGStatus.FAILED, ago(60)), NOW, 60)
    assert not collectable(meta(DAGStatus.DONE, ago(59)), NOW, 60)
    assert not collectable(meta(DAGStatus.RUNNING), NOW, 0)
    assert not collectable(meta(DAGStatus.PAUSED), NOW, 0)


def test_collectable_without_finish_time_ages_from_creation() -> None:
    assert collectable(meta(DAGStatus.CANCELED, created_at=ago(120)), NOW, 60)
    assert not collectable(meta(DAGStatus.CANCELED, created_at=ago(30)), NOW, 60)
    assert collectable(meta(DAGStatus.CANCELED), NOW, 60)  # no time at all: ancient


# --- retry ---------------------------------------------------------------------------


def diamond(a: StepStatus = StepStatus.FAILED) -> dict[str, StepRecord]:
    """a -> b -> d, a -> c (optional) ; e independent and done."""
    recs = [
        step("a", a),
        step("b", StepStatus.SKIPPED, ("a",)),
        step("c", StepStatus.CANCELED, (), ("a",)),
        step("d", StepStatus.SKIPPED, ("b",)),
        step("e", StepStatus.DONE),
    ]
    return {r.step_id: r for r in recs}


def test_retry_roots_are_every_failed_step_sorted() -> None:
    steps = {**diamond(), "z": step("z", StepStatus.FAILED), "f": step("f", StepStatus.FAILED)}
    assert retry_roots(steps) == ["a", "f", "z"]


def test_retry_roots_refuse_a_dag_without_failures() -> None:
    with pytest.raises(RetryRefused, match="no failed step"):
        retry_roots({"e": step("e", StepStatus.DONE)})
    with pytest.raises(RetryRefused, match="no failed step"):
        retry_roots({})


def test_retry_roots_include_pending_steps_of_a_finished_dag() -> None:
    # An interrupted retry reset "a" but never turned the DAG back to running.
    steps = diamond(StepStatus.PENDING)
    assert retry_roots(steps, finished=True) == ["a"]
    with pytest.raises(RetryRefused):
        retry_roots(steps, finished=False)
    assert retry_roots(steps, "a", finished=True) == ["a"]


@pytest.mark.parametrize("status", [StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELED])
def test_one_step_can_be_retried_when_it_did_not_run_to_the_end(status: StepStatus) -> None:
    assert retry_roots({"x": step("x", status)}, "x") == ["x"]


@pytest.mark.parametrize("status", [StepStatus.DONE, StepStatus.RUNNING, StepStatus.PENDING])
def test_a_step_that_ran_or_runs_is_not_retried(status: StepStatus) -> None:
    with pytest.raises(RetryRefused, match=f"is {status.value}"):
        retry_roots({"x": step("x", status)}, "x")


def test_retry_of_an_unknown_step_names_it() -> None:
    with pytest.raises(StepNotFound, match="'nope'"):
        retry_roots(diamond(), "nope")


def test_plan_follows_required_and_optional_dependents_transitively() -> None:
    assert retry_plan(diamond(), ["a"]) == ["a", "b", "c", "d"]


def test_plan_leaves_dependents_that_ran() -> None:
    steps = diamond()
    steps["b"] = step("b", StepStatus.DONE, ("a",))
    steps["d"] = step("d", StepStatus.FAILED, ("b",))
    assert retry_plan(steps, ["a"]) == ["a", "c"]


def test_plan_of_a_mid_graph_step_and_duplicate_roots() -> None:
    assert retry_plan(diamond(), ["b", "b"]) == ["b", "d"]


def test_reset_clears_the_run_and_takes_a_new_generation() -> None:
    rec = step("a", StepStatus.FAILED)

    rec = msgspec.structs.replace(
        rec,
        attempt=3,
        generation=7,
        worker_id="w",
        error_kind="handler",
        error_message="boom",
        held=True,
        started_at=ago(5),
        finished_at=ago(1),
        run_id="r",
    )
    new = reset_for_retry(rec, 42)
    assert new.status is StepStatus.PENDING
    assert (new.attempt, new.generation, new.worker_id) == (0, 42, "")
    assert (new.error_kind, new.error_message, new.held) == ("", "", False)
    assert new.started_at is None and new.finished_at is None
    assert new.run_id == "r" and new.fn_name == rec.fn_name


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (DAGStatus.CANCELED, "submit it again"),
        (DAGStatus.PAUSED, "resume it"),
        (DAGStatus.PAUSING, "resume it"),
    ],
)
def test_retry_refuses_canceled_and_paused_dags(status: DAGStatus, words: str) -> None:
    with pytest.raises(RetryRefused, match=words):
        retryable_dag(meta(status))


@pytest.mark.parametrize("status", [DAGStatus.RUNNING, DAGStatus.FAILED, DAGStatus.DONE])
def test_retry_accepts_running_and_finished_dags(status: DAGStatus) -> None:
    retryable_dag(meta(status))
