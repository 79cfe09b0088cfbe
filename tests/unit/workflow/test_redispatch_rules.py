"""The sweep's re-send decision (pure), the sequence ledger, the capture enqueuer's acks."""

from __future__ import annotations

import math

import pytest

from ebind._jsreq import PubAck
from ebind.wire import TaskEnvelope
from ebind.workflow import CaptureEnqueuer, NatsEnqueuer
from ebind.workflow.redispatch import (
    RedispatchAction,
    RedispatchTiming,
    SentLedger,
    backoff,
    decide,
    msg_id,
)

WAIT, CHECK, PROBE, RESEND = (
    RedispatchAction.WAIT,
    RedispatchAction.CHECK,
    RedispatchAction.PROBE,
    RedispatchAction.RESEND,
)
T = RedispatchTiming(grace=10.0, base=240.0, cap=3600.0, probe_window=150.0)


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    assert [backoff(n, 240.0, 3600.0) for n in range(6)] == [
        240.0,
        480.0,
        960.0,
        1920.0,
        3600.0,
        3600.0,
    ]


def test_backoff_of_an_absurd_count_is_the_cap_not_an_overflow() -> None:
    assert backoff(10_000, 1.0, 60.0) == 60.0


def test_backoff_refuses_a_negative_count() -> None:
    with pytest.raises(ValueError, match="re-send count must be >= 0, got -1"):
        backoff(-1, 1.0, 2.0)


@pytest.mark.parametrize("seq_known", [True, False])
@pytest.mark.parametrize("present", [True, False, None])
def test_a_step_inside_its_grace_is_never_looked_at(seq_known: bool, present: bool | None) -> None:
    t = RedispatchTiming(grace=10.0, base=1.0, cap=2.0, probe_window=150.0)
    assert decide(9.9, 0, seq_known=seq_known, present=present, timing=t) is WAIT


@pytest.mark.parametrize("seq_known", [True, False])
@pytest.mark.parametrize("present", [True, False, None])
@pytest.mark.parametrize(("resends", "age"), [(0, 239.0), (1, 479.0), (3, 1919.0), (9, 3599.0)])
def test_a_step_inside_its_backoff_waits_whatever_is_known(
    seq_known: bool, present: bool | None, resends: int, age: float
) -> None:
    assert decide(age, resends, seq_known=seq_known, present=present, timing=T) is WAIT


def test_a_known_sequence_past_the_backoff_is_checked_first() -> None:
    assert decide(240.0, 0, seq_known=True, present=None, timing=T) is CHECK
    assert decide(1e6, 5, seq_known=True, present=None, timing=T) is CHECK


@pytest.mark.parametrize("seq_known", [True, False])
def test_a_message_still_in_the_stream_is_left_alone(seq_known: bool) -> None:
    for resends, age in [(0, 240.0), (2, 960.0), (8, 1e9)]:
        assert decide(age, resends, seq_known=seq_known, present=True, timing=T) is WAIT


@pytest.mark.parametrize("seq_known", [True, False])
def test_a_message_gone_from_the_stream_is_resent(seq_known: bool) -> None:
    assert decide(240.0, 0, seq_known=seq_known, present=False, timing=T) is RESEND
    assert decide(480.0, 1, seq_known=seq_known, present=False, timing=T) is RESEND


def test_an_unknown_sequence_inside_the_duplicate_window_is_probed() -> None:
    t = RedispatchTiming(grace=1.0, base=2.0, cap=60.0, probe_window=150.0)
    assert decide(2.0, 0, seq_known=False, present=None, timing=t) is PROBE
    assert decide(149.9, 3, seq_known=False, present=None, timing=t) is PROBE


def test_an_unknown_sequence_past_the_duplicate_window_is_resent_backed_off() -> None:
    # A same-id re-publish there would store a second copy: re-send, no probe.
    assert decide(240.0, 0, seq_known=False, present=None, timing=T) is RESEND
    assert decide(479.0, 1, seq_known=False, present=None, timing=T) is WAIT
    assert decide(480.0, 1, seq_known=False, present=None, timing=T) is RESEND


def test_without_a_look_up_a_step_is_resent_at_each_backoff() -> None:
    t = RedispatchTiming(grace=0.0, base=1.0, cap=8.0, probe_window=0.0)

    def first_resend(n: int) -> int:
        return min(
            a for a in range(100) if decide(a, n, seq_known=False, present=None, timing=t) is RESEND
        )

    due = [first_resend(n) for n in range(6)]
    assert due == [1, 2, 4, 8, 8, 8]


def test_a_step_never_dispatched_has_infinite_age_and_is_looked_at() -> None:
    assert decide(math.inf, 0, seq_known=True, present=None, timing=T) is CHECK


def test_msg_id_is_the_dispatch_msg_id() -> None:
    assert msg_id("d1", "s1", 42) == "d1:s1:42"


def test_the_ledger_answers_only_for_the_generation_it_saw() -> None:
    led = SentLedger()
    led.put("d", "a", 7, 100)
    assert led.get("d", "a", 7) == 100
    assert led.get("d", "a", 8) is None and led.get("d", "b", 7) is None
    led.put("d", "a", 9, 120)  # a re-send replaces the earlier dispatch
    assert led.get("d", "a", 7) is None and led.get("d", "a", 9) == 120
    led.forget("d", "a")
    assert led.get("d", "a", 9) is None and len(led) == 0
    led.forget("d", "a")  # forgetting twice is harmless


def test_the_ledger_is_bounded_dropping_the_oldest() -> None:
    led = SentLedger(limit=3)
    for i in range(5):
        led.put("d", f"s{i}", 1, i + 1)
    assert len(led) == 3
    assert led.get("d", "s0", 1) is None and led.get("d", "s1", 1) is None
    assert [led.get("d", f"s{i}", 1) for i in range(2, 5)] == [3, 4, 5]


async def test_the_capture_enqueuer_acks_like_the_stream_and_answers_look_ups() -> None:
    enq = CaptureEnqueuer()
    env = TaskEnvelope(id="d:a", name="inc")
    first = await enq.enqueue(env, msg_id="d:a:1")
    again = await enq.enqueue(env, msg_id="d:a:1")
    other = await enq.enqueue(env, msg_id="d:a:5")
    assert first is not None and again is not None and other is not None
    assert (first.seq, first.duplicate) == (1, False)
    assert (again.seq, again.duplicate) == (1, True)
    assert (other.seq, other.duplicate) == (2, False)
    assert await enq.present(1, "d:a:1") and await enq.present(2, "d:a:5")
    assert not await enq.present(2, "d:a:1")  # another message sits at that sequence
    enq.lose("d:a:1")
    assert not await enq.present(1, "d:a:1") and await enq.present(2, "d:a:5")
    with pytest.raises(KeyError, match="no message was stored under msg-id 'd:b:1'"):
        enq.lose("d:b:1")


async def test_the_nats_enqueuer_hands_back_the_pubacks_sequence() -> None:
    async def publish(env: TaskEnvelope, *, msg_id: str) -> PubAck:
        return PubAck(stream="EBIND_TASKS", seq=41 if msg_id == "d:a:1" else 42)

    enq = NatsEnqueuer(publish)
    env = TaskEnvelope(id="d:a", name="inc")
    first, second = await enq.enqueue(env, msg_id="d:a:1"), await enq.enqueue(env)
    assert first is not None and second is not None
    assert (first.seq, second.seq) == (41, 42)
