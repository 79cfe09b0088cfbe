"""The pure health decisions: every combination of inputs, boundaries, and the stall window."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from ebind.worker.health import (
    HealthInputs,
    HealthLimits,
    StallTracker,
    check_port,
    liveness,
    readiness,
)

LIMITS = HealthLimits(stall_limit=1.0, stall_window=30.0, live_limit=10.0)
HEALTHY = HealthInputs(
    running=True,
    stopping=False,
    consumers_created=True,
    nats_connected=True,
    unavailable_consumers=(),
    stuck_threads=0,
    concurrency=4,
    worst_stall=0.0,
    heartbeat_age=0.1,
)


def test_a_healthy_worker_is_ready_with_no_reasons() -> None:
    v = readiness(HEALTHY, LIMITS)
    assert v.ok and v.reasons == ()


# Each fault, the inputs that produce it, and a word its reason must contain.
FAULTS: dict[str, tuple[dict[str, object], str]] = {
    "not_running": ({"running": False}, "worker not running"),
    "stopping": ({"running": False, "stopping": True}, "worker stopping"),
    "no_consumers": ({"consumers_created": False}, "consumers not created yet"),
    "disconnected": ({"nats_connected": False}, "nats disconnected"),
    "consumer_gone": (
        {"unavailable_consumers": ("ebind-worker",)},
        "consumer ebind-worker unavailable",
    ),
    "stuck": ({"stuck_threads": 4}, "all 4 slots held by stuck sync threads"),
    "stalled": ({"worst_stall": 2.5}, "event loop stalled 2.50 s (limit 1 s)"),
    "unanswered": ({"heartbeat_age": 12.0}, "event loop not answering for 12.0 s"),
}


@pytest.mark.parametrize(
    "combo",
    [c for n in range(len(FAULTS) + 1) for c in itertools.combinations(sorted(FAULTS), n)],
    ids=lambda c: "+".join(c) or "none",
)
def test_every_combination_of_faults_is_not_ready_and_names_each_fault(
    combo: tuple[str, ...],
) -> None:
    fields: dict[str, object] = {}
    for name in combo:
        fields.update(FAULTS[name][0])
    inputs = dataclasses.replace(HEALTHY, **fields)  # type: ignore[arg-type]
    v = readiness(inputs, LIMITS)
    assert v.ok is (not combo)
    text = " | ".join(v.reasons)
    for name in combo:
        # Stopping outranks "not running" and "no consumers" (one lifecycle reason at a
        # time); a loop that does not answer makes its stall moot.
        if name in ("not_running", "no_consumers") and (
            "stopping" in combo or (name == "no_consumers" and "not_running" in combo)
        ):
            continue
        if name == "stalled" and "unanswered" in combo:
            continue
        assert FAULTS[name][1] in text, (name, v.reasons)
    assert len(v.reasons) == len(set(v.reasons))


def test_lifecycle_reasons_are_exclusive_with_stopping_first() -> None:
    v = readiness(dataclasses.replace(HEALTHY, running=False, stopping=True), LIMITS)
    assert v.reasons == ("worker stopping",)
    v = readiness(
        dataclasses.replace(HEALTHY, running=False, consumers_created=False),
        LIMITS,
    )
    assert v.reasons == ("worker not running",)


@pytest.mark.parametrize(
    ("stuck", "concurrency", "ready"),
    [(0, 1, True), (1, 1, False), (3, 4, True), (4, 4, False), (5, 4, False)],
)
def test_stuck_threads_make_the_worker_unready_only_when_they_hold_every_slot(
    stuck: int, concurrency: int, ready: bool
) -> None:
    inputs = dataclasses.replace(HEALTHY, stuck_threads=stuck, concurrency=concurrency)
    assert readiness(inputs, LIMITS).ok is ready


@pytest.mark.parametrize(("stall", "ready"), [(0.0, True), (1.0, True), (1.0001, False)])
def test_a_stall_counts_only_past_the_limit(stall: float, ready: bool) -> None:
    inputs = dataclasses.replace(HEALTHY, worst_stall=stall)
    assert readiness(inputs, LIMITS).ok is ready


def test_several_unavailable_consumers_are_each_named() -> None:
    inputs = dataclasses.replace(HEALTHY, unavailable_consumers=("a", "b"))
    assert readiness(inputs, LIMITS).reasons == ("consumer a unavailable", "consumer b unavailable")


@pytest.mark.parametrize(("age", "live"), [(0.0, True), (10.0, True), (10.5, False)])
def test_liveness_depends_on_the_heartbeat_age_only(age: float, live: bool) -> None:
    v = liveness(age, LIMITS)
    assert v.ok is live
    assert v.reasons == (() if live else (f"event loop not answering for {age:.1f} s",))


@pytest.mark.parametrize("name", ["stall_limit", "stall_window", "live_limit"])
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan")])
def test_limits_must_be_positive(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"health {name} must be > 0 seconds"):
        HealthLimits(**{name: value})


def test_stall_tracker_keeps_the_worst_stall_within_its_window() -> None:
    t = StallTracker(window=10.0)
    assert t.worst(now=0.0) == 0.0
    t.record(0.01, now=1.0)  # scheduling noise: not a stall
    assert t.worst(now=1.0) == 0.0 and t.last == 0.01
    t.record(2.0, now=2.0)
    t.record(0.5, now=5.0)
    assert t.worst(now=5.0) == 2.0
    assert t.worst(now=12.5) == 0.5  # the 2 s stall left the window
    assert t.worst(now=15.1) == 0.0
    t.record(-0.2, now=16.0)  # a timer firing early is no stall
    assert t.last == 0.0 and t.worst(now=16.0) == 0.0


@pytest.mark.parametrize("port", [0, 1, 8080, 65535])
def test_valid_ports_pass(port: int) -> None:
    assert check_port(port) == port


@pytest.mark.parametrize("port", [-1, 65536, True, 80.0, "8080", None])
def test_anything_else_is_refused_naming_the_value(port: object) -> None:
    with pytest.raises(
        ValueError, match=f"health port must be an integer from 0 to 65535, got {port!r}"
    ):
        check_port(port)
