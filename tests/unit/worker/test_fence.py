"""One recorded outcome per run of a plain task: the pure fence rules and the runner using them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from test_runner_step_proof import _delivery
from test_runner_step_proof import _Rig as _StepRig

from ebind.client import SubjectMoved
from ebind.errors import NonRetryable
from ebind.wire import TaskEnvelope, TaskResponse, encoder
from ebind.worker.fence import answers_run, response_fence
from ebind.worker.runner import FENCE_TRIES

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _env(enqueued_at: datetime | None = T0, task_id: str = "t1") -> TaskEnvelope:
    return TaskEnvelope(
        id=task_id,
        name="t.step",
        payload=msgspec.Raw(b"[1]"),
        reply_to=f"RESP.c.{task_id}",
        enqueued_at=enqueued_at,
    )


def _resp(completed_at: datetime | None, task_id: str = "t1") -> TaskResponse:
    return TaskResponse(task_id=task_id, result=msgspec.Raw(b"2"), completed_at=completed_at)


@pytest.mark.parametrize(
    ("resp", "env", "expected"),
    [
        (_resp(T0 + timedelta(seconds=1)), _env(), True),
        (_resp(T0), _env(), True),  # same instant: this run
        (_resp(T0 - timedelta(seconds=1)), _env(), False),  # an earlier run (DLQ requeue)
        (_resp(T0 + timedelta(seconds=1), task_id="other"), _env(), False),
        (_resp(None), _env(), False),
        (_resp(T0), _env(enqueued_at=None), False),
    ],
    ids=["after", "same-instant", "earlier-run", "other-task", "no-completed", "no-enqueued"],
)
def test_answers_run(resp: TaskResponse, env: TaskEnvelope, expected: bool) -> None:
    assert answers_run(resp, env) is expected


@pytest.mark.parametrize(
    ("last", "expected"),
    [
        (None, 0),  # nothing stored yet: expect an empty subject
        (encoder.encode(_resp(T0 + timedelta(seconds=1))), None),  # this run is answered
        (encoder.encode(_resp(T0 - timedelta(seconds=1))), 17),  # an earlier run's answer
        (encoder.encode(_resp(T0, task_id="other")), 17),
        (b"", 17),  # a removal marker left by max_age
        (b"{not json", 17),
    ],
    ids=["empty", "answered", "earlier-run", "other-task", "marker", "garbage"],
)
def test_response_fence(last: bytes | None, expected: int | None) -> None:
    assert response_fence(last, 17, _env()) == expected


def _msg() -> Any:
    return _delivery(encoder.encode(_env(datetime.now(UTC))), delivered=1)


class _Rig(_StepRig):
    """The step-proof rig without a hook: records dead letters and conditional publishes."""

    def __init__(self, chain: Any, refuse_until: int = 0) -> None:
        super().__init__(hook=None)
        self.runner.chain = chain
        self.publishes: list[int | None] = []

        async def publish_response(
            subject: str, data: bytes, *, expected_last_seq: int | None = None
        ) -> None:
            self.publishes.append(expected_last_seq)
            if len(self.publishes) <= refuse_until:
                raise SubjectMoved("moved", subject=subject)

        self.runner.app.publish_response = publish_response

    @property
    def dead_letters(self) -> list[str]:
        """Subjects of the dead letters published."""
        return [subject for subject, _ in self.dlq]


async def _ok(*_: Any) -> bytes:
    return b"2"


async def test_a_first_response_is_stored_only_on_an_empty_subject() -> None:
    rig = _Rig(_ok)
    msg = _msg()
    await rig.runner.process(msg)
    assert rig.publishes == [0] and msg.acts == ["ack"]


@pytest.mark.parametrize(
    ("newest", "publishes"),
    [(None, [0]), (41, [0, 41])],
    ids=["this-runs-answer-late-one-dropped", "earlier-runs-answer-published-over"],
)
async def test_a_refused_response_reads_the_subjects_newest_message(
    newest: int | None, publishes: list[int]
) -> None:
    rig = _Rig(_ok, refuse_until=1)

    async def expected_seq(_env: TaskEnvelope) -> int | None:
        return newest

    rig.runner._expected_seq = expected_seq  # type: ignore[method-assign]
    msg = _msg()
    await rig.runner.process(msg)
    assert rig.publishes == publishes and msg.acts == ["ack"]


async def test_a_subject_that_keeps_moving_is_not_acked(monkeypatch: pytest.MonkeyPatch) -> None:
    import ebind.worker.runner as runner_mod

    monkeypatch.setattr(runner_mod, "RESPOND_PATIENCE", 0.0)  # no retry loop in a unit test
    rig = _Rig(_ok, refuse_until=100)
    seqs = iter(range(1, 100))

    async def moving(_env: TaskEnvelope) -> int | None:
        return next(seqs)

    rig.runner._expected_seq = moving  # type: ignore[method-assign]
    msg = _msg()
    await rig.runner.process(msg)
    assert len(rig.publishes) == FENCE_TRIES
    assert msg.acts == ["nak"]  # the result is not lost: the task runs again


@pytest.mark.parametrize(
    ("answered", "dlq", "publishes", "acts"),
    [(True, [], [], ["ack"]), (False, ["DLQ.t.step"], [0], ["term"])],
    ids=["answered-run-dropped", "unanswered-run-stored-then-answered"],
)
async def test_a_dead_letter_is_written_only_for_a_run_without_an_answer(
    answered: bool, dlq: list[str], publishes: list[int], acts: list[str]
) -> None:
    async def fails(*_: Any) -> bytes:
        from ebind.worker import AttemptError
        from ebind.worker.outcome import classify

        raise AttemptError(classify(NonRetryable("late failure")))

    rig = _Rig(fails)

    async def is_answered(_env: TaskEnvelope) -> bool:
        return answered

    rig.runner._answered = is_answered  # type: ignore[method-assign]
    msg = _msg()
    await rig.runner.process(msg)
    assert rig.dead_letters == dlq and rig.publishes == publishes and msg.acts == acts
