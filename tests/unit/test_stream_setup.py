"""Stream setup decisions: configs from a Retention, additions only, operator values kept."""

from __future__ import annotations

from typing import Any

import pytest
from nats.js import api

from ebind.retention import Retention
from ebind.streams import (
    DAG_EVENTS_STREAM,
    DLQ_STREAM,
    RESP_STREAM,
    TASKS_STREAM,
    _stream_configs,
    operator_differences,
    stream_additions,
)


def _wanted(retention: Retention | None = None, replicas: int = 1) -> dict[str, Any]:
    return {c.name: c for c in _stream_configs(replicas, retention)}


def _as_reported(want: Any, **changes: Any) -> Any:
    """The config as the server reports it back: nanosecond durations, defaults filled in."""
    reported = api.StreamConfig.from_response(want.as_dict())
    reported.duplicate_window = reported.duplicate_window or 120.0
    reported.max_msgs = reported.max_bytes = -1
    return reported.evolve(**changes) if changes else reported


def test_new_streams_take_their_limits_from_the_retention() -> None:
    got = _wanted(Retention(tasks=100, results=30, dead_letters=600, dag_history=10))
    assert got[TASKS_STREAM].max_age == 125.0
    assert got[DAG_EVENTS_STREAM].max_age == 125.0
    assert got[RESP_STREAM].max_age == 30.0
    assert got[RESP_STREAM].subject_delete_marker_ttl == 30.0
    assert got[RESP_STREAM].allow_msg_ttl is True
    assert got[DLQ_STREAM].max_age == 600.0
    default = _wanted()
    assert default[TASKS_STREAM].max_age == 7 * 86400 + 3600
    assert default[DLQ_STREAM].max_age == 30 * 86400


@pytest.mark.parametrize("name", [TASKS_STREAM, RESP_STREAM, DLQ_STREAM, DAG_EVENTS_STREAM])
def test_a_stream_in_shape_needs_nothing(name: str) -> None:
    want = _wanted()[name]
    have = _as_reported(want)
    assert stream_additions(have, want) == {}
    assert operator_differences(have, want) == {}


def test_every_kv_stream_in_shape_needs_nothing() -> None:
    for want in _stream_configs(1)[4:]:
        assert stream_additions(_as_reported(want), want) == {}


def test_missing_subjects_are_appended_after_the_operators() -> None:
    want = _wanted()[TASKS_STREAM]
    have = _as_reported(want, subjects=["TASKS.>", "EXTRA.>"])
    got = stream_additions(have, want)
    assert got["subjects"][:2] == ["TASKS.>", "EXTRA.>"]
    assert set(got["subjects"]) == {"EXTRA.>", *want.subjects}


@pytest.mark.parametrize("flag", ["allow_msg_schedules", "allow_msg_ttl"])
def test_required_flags_are_switched_on(flag: str) -> None:
    want = _wanted()[TASKS_STREAM]
    assert stream_additions(_as_reported(want, **{flag: False}), want) == {flag: True}
    assert stream_additions(_as_reported(want, **{flag: None}), want) == {flag: True}


def test_allow_direct_is_switched_on_for_responses() -> None:
    want = _wanted()[RESP_STREAM]
    assert stream_additions(_as_reported(want, allow_direct=False), want) == {"allow_direct": True}


def test_the_expiry_marker_is_added_once_and_an_operator_value_kept() -> None:
    want = _wanted(Retention(results=60))[RESP_STREAM]
    bare = _as_reported(want, subject_delete_marker_ttl=None, allow_msg_ttl=False)
    assert stream_additions(bare, want) == {
        "subject_delete_marker_ttl": 60.0,
        "allow_msg_ttl": True,
    }
    operator = _as_reported(want, subject_delete_marker_ttl=5.0)
    assert stream_additions(operator, want) == {}
    assert operator_differences(operator, want) == {"subject_delete_marker_ttl": (5.0, 60.0)}


@pytest.mark.parametrize("server_age", [3600.0, 90 * 86400.0, 0.0])
def test_max_age_set_on_the_server_is_never_changed(server_age: float) -> None:
    want = _wanted()[TASKS_STREAM]
    have = _as_reported(want, max_age=server_age)
    assert stream_additions(have, want) == {}
    assert operator_differences(have, want) == {"max_age": (server_age, want.max_age)}


def test_duplicate_window_is_compared_with_what_ebind_sets_only() -> None:
    tasks = _wanted()[TASKS_STREAM]
    assert operator_differences(_as_reported(tasks, duplicate_window=60.0), tasks) == {
        "duplicate_window": (60.0, 300.0)
    }
    # ebind sets no window on the DLQ: the server's default is no difference
    dlq = _wanted()[DLQ_STREAM]
    assert operator_differences(_as_reported(dlq, duplicate_window=120.0), dlq) == {}


def test_nanosecond_rounding_is_not_a_difference() -> None:
    want = _wanted(Retention(tasks=10.123456789))[TASKS_STREAM]
    have = _as_reported(want, max_age=round(want.max_age, 6))
    assert operator_differences(have, want) == {}


def test_replicas_are_raised_never_lowered() -> None:
    want3 = _wanted(replicas=3)[TASKS_STREAM]
    assert stream_additions(_as_reported(want3, num_replicas=1), want3) == {"num_replicas": 3}
    want1 = _wanted(replicas=1)[TASKS_STREAM]
    assert stream_additions(_as_reported(want1, num_replicas=3), want1) == {}


def test_only_size_bounds_with_the_old_discard_policy_on_work_streams_drop_silently() -> None:
    from types import SimpleNamespace

    from nats.js import api

    from ebind.streams import (
        DLQ_STREAM,
        RESP_STREAM,
        TASKS_STREAM,
        silent_discard_limits,
    )

    old, new = api.DiscardPolicy.OLD, api.DiscardPolicy.NEW
    bounded = SimpleNamespace(max_msgs=10, max_bytes=-1, discard=old)
    assert silent_discard_limits(TASKS_STREAM, bounded) == {"max_msgs": 10}
    both = SimpleNamespace(max_msgs=10, max_bytes=4096, discard=None)  # unset means "old"
    assert silent_discard_limits(TASKS_STREAM, both) == {"max_msgs": 10, "max_bytes": 4096}
    assert silent_discard_limits(TASKS_STREAM, SimpleNamespace(max_msgs=10, discard=new)) == {}
    # Dead letters and results age out by design; a count bound deletes them unrecorded.
    assert silent_discard_limits(DLQ_STREAM, bounded) == {"max_msgs": 10}
    assert silent_discard_limits(RESP_STREAM, bounded) == {"max_msgs": 10}
    assert silent_discard_limits("EBIND_PROGRESS", bounded) == {}  # progress: latest only
    unbounded = SimpleNamespace(max_msgs=-1, max_bytes=-1, discard=old)
    assert silent_discard_limits(TASKS_STREAM, unbounded) == {}
