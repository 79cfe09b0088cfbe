"""Whether a stored response already answers an expired run (so the expirer does not again)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from ebind.expirer import answers_run
from ebind.wire import TaskEnvelope, TaskError, TaskResponse

_T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _task(enqueued_at: datetime | None = _T0) -> TaskEnvelope:
    return TaskEnvelope(id="t1", name="n", payload=msgspec.Raw(b"[]"), enqueued_at=enqueued_at)


def _resp(task_id: str = "t1", completed_at: datetime | None = _T0) -> TaskResponse:
    error = TaskError(kind="expired", message="too late")
    return TaskResponse(task_id=task_id, error=error, attempts=0, completed_at=completed_at)


def test_a_response_completed_after_the_run_was_enqueued_answers_it() -> None:
    assert answers_run(_resp(completed_at=_T0 + timedelta(seconds=3)), _task())
    assert answers_run(_resp(completed_at=_T0), _task())


def test_a_response_to_an_earlier_run_of_the_same_id_does_not() -> None:
    assert not answers_run(_resp(completed_at=_T0 - timedelta(seconds=1)), _task())


def test_a_response_to_another_task_does_not() -> None:
    assert not answers_run(_resp(task_id="t2"), _task())


def test_without_both_times_or_a_task_nothing_counts_as_answered() -> None:
    assert not answers_run(_resp(completed_at=None), _task())
    assert not answers_run(_resp(), _task(enqueued_at=None))
    assert not answers_run(_resp(), None)


def test_a_response_echoing_another_reply_token_does_not() -> None:
    mine = msgspec.structs.replace(_task(), reply_token="a" * 32)
    theirs = msgspec.structs.replace(_resp(), token="b" * 32)
    assert not answers_run(theirs, mine)
    assert not answers_run(_resp(), mine)  # no token: not this task's answer either
    assert answers_run(msgspec.structs.replace(_resp(), token="a" * 32), mine)
