"""Observer hooks: listeners get events, gauge sources add up, failures stay contained."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from structlog.testing import capture_logs

from ebind import observe


def test_listeners_receive_events_until_they_unsubscribe() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def listener(event: str, fields: Mapping[str, Any]) -> None:
        seen.append((event, dict(fields)))

    stop = observe.subscribe(listener)
    try:
        observe.emit(observe.SWEEP_DONE, seconds=0.25, dags=3, failed=0)
    finally:
        stop()
    observe.emit(observe.SWEEP_DONE, seconds=1.0, dags=0, failed=0)
    assert seen == [(observe.SWEEP_DONE, {"seconds": 0.25, "dags": 3, "failed": 0})]


def test_a_failing_listener_is_logged_and_the_others_still_run() -> None:
    seen: list[str] = []

    def broken(event: str, fields: Mapping[str, Any]) -> None:
        raise RuntimeError("listener bug")

    def fine(event: str, fields: Mapping[str, Any]) -> None:
        seen.append(event)

    stops = [observe.subscribe(broken), observe.subscribe(fine)]
    try:
        with capture_logs() as logs:
            observe.emit(observe.REDELIVERED, delivery=2)
    finally:
        for stop in stops:
            stop()
    assert seen == [observe.REDELIVERED]
    assert [e["event"] for e in logs] == ["observe.listener_failed"]
    assert logs[0]["event_name"] == observe.REDELIVERED


def test_gauges_sum_over_sources_and_skip_a_failing_one() -> None:
    def boom() -> Mapping[str, float]:
        raise RuntimeError("source bug")

    removers = [
        observe.add_gauge_source(lambda: {observe.GAUGE_STUCK_THREADS: 2.0}),
        observe.add_gauge_source(
            lambda: {observe.GAUGE_STUCK_THREADS: 1.0, observe.GAUGE_LEADER: 1.0}
        ),
        observe.add_gauge_source(boom),
    ]
    try:
        with capture_logs() as logs:
            values = observe.gauges()
    finally:
        for remove in removers:
            remove()
    assert values == {observe.GAUGE_STUCK_THREADS: 3.0, observe.GAUGE_LEADER: 1.0}
    assert [e["event"] for e in logs] == ["observe.gauge_source_failed"]
    assert observe.gauges() == {}
