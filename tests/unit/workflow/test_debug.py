"""Pure tests of ebind.workflow.debug: snapshot builders and the text report."""

from __future__ import annotations

import io
from datetime import timedelta

import msgspec
import pytest
from wf_pure_helpers import T0, C, D, F, P, R, S, meta, signal, step

from ebind.workflow.debug import (
    DAGDebug,
    build_debug,
    compute_breakpoints,
    compute_signals,
    count_blocked,
    count_waiting_steps,
    human_duration,
    matches_labels,
    write_debug,
)
from ebind.workflow.types import BPState, DAGStatus, StepRecord, StepStatus

MS = timedelta(milliseconds=1)


def timed(step_id: str, status: StepStatus, *deps: str, q: int, e: int) -> StepRecord:
    rec = step(step_id, deps, status=status)
    rec.added_at = T0
    rec.started_at = T0 + q * MS
    rec.finished_at = T0 + (q + e) * MS if status.terminal else None
    return rec


def render(dbg: DAGDebug) -> str:
    buf = io.StringIO()
    write_debug(buf, dbg)
    return buf.getvalue()


NOW = T0 + timedelta(seconds=90)


class TestBuildDebug:
    def test_counts_per_status(self) -> None:
        recs = [step("a", status=D), step("b", status=D), step("c", status=F), step("d")]
        dbg = build_debug(meta(), recs, None, NOW)
        assert dbg.counts == {D: 2, F: 1, P: 1}

    def test_queue_and_exec_durations(self) -> None:
        dbg = build_debug(meta(), [timed("a", D, q=5, e=100)], None, NOW)
        assert dbg.steps[0].queue_duration == 5 * MS
        assert dbg.steps[0].exec_duration == 100 * MS

    def test_durations_are_zero_when_never_started(self) -> None:
        dbg = build_debug(meta(), [step("a", added=0)], None, NOW)
        assert (dbg.steps[0].queue_duration, dbg.steps[0].exec_duration) == (
            timedelta(0),
            timedelta(0),
        )

    def test_total_duration_zero_while_running_then_max_finish(self) -> None:
        running = [timed("a", D, q=0, e=200), timed("b", R, q=0, e=0)]
        assert build_debug(meta(), running, None, NOW).total_duration == timedelta(0)
        done = [timed("a", D, q=0, e=200), timed("b", D, q=0, e=50)]
        assert build_debug(meta(), done, None, NOW).total_duration == 200 * MS

    def test_steps_ordered_by_added_at_then_step_id(self) -> None:
        recs = [step("z", added=1), step("b", added=2), step("a", added=1)]
        dbg = build_debug(meta(), recs, None, NOW)
        assert [s.record.step_id for s in dbg.steps] == ["a", "z", "b"]

    def test_blockers_list_non_terminal_required_and_optional_deps(self) -> None:
        recs = [
            step("a", status=R),
            step("b"),
            step("t", status=D),
            step("c", ["a", "t"], optional_deps=["b"]),
            step("ready", ["t"]),
        ]
        dbg = build_debug(meta(), recs, None, NOW)
        blockers = {b.step_id: b for b in dbg.blockers}
        assert set(blockers) == {"c"}
        assert blockers["c"].waiting_on == ["a", "b"]

    def test_blockers_report_missing_deps_after_bp_gates_and_signals(self) -> None:
        recs = [
            step("p", status=D, break_after=["bp"]),
            step("c", ["p", "ghost"], wait_signals=["go", "ok"]),
        ]
        dbg = build_debug(meta(active=["bp"]), recs, [signal("ok")], NOW)
        (b,) = dbg.blockers
        assert (b.waiting_on, b.gated_by, b.waiting_signals) == (["ghost"], ["p"], ["go"])

    def test_held_or_before_blocked_step_is_not_a_blocker_by_itself(self) -> None:
        recs = [step("a", held=True), step("b", break_before=["bp"])]
        assert build_debug(meta(active=["bp"]), recs, None, NOW).blockers == []

    def test_snapshot_encodes_to_json(self) -> None:
        dbg = build_debug(meta(), [timed("a", D, q=1, e=2)], [signal("s", b"1")], NOW)
        out = msgspec.json.decode(msgspec.json.encode(dbg))
        assert out["counts"] == {"done": 1}
        assert out["steps"][0]["record"]["step_id"] == "a"


class TestBreakpoints:
    def test_blocked_before_and_holding_after(self) -> None:
        at = T0 + timedelta(seconds=30)
        recs = [
            step("a", status=D, break_after=["x"], bp_blocked_at=at),
            step("b", ["a"]),
            step("c", optional_deps=["a"], break_before=["y", "x"]),
            step("r", break_before=["x"]),
        ]
        infos = compute_breakpoints(meta(active=["x"]), recs)
        by = {(i.step_id, i.position): i for i in infos}
        assert [(i.step_id, i.position) for i in infos] == [
            ("a", "after"),
            ("c", "before"),
            ("r", "before"),
        ]
        assert by["a", "after"].state is BPState.BLOCKED
        assert by["a", "after"].holding == ["b", "c"]
        assert by["a", "after"].blocked_since == at
        assert by["c", "before"].state is BPState.NONE  # armed but not arrived
        assert by["r", "before"].state is BPState.BLOCKED
        assert count_blocked(infos) == 2

    def test_inactive_and_released(self) -> None:
        recs = [
            step("a", break_before=["q"]),
            step("b", break_before=["x"], bp_before=BPState.RELEASED),
        ]
        infos = compute_breakpoints(meta(active=["x"]), recs)
        assert [(i.armed, i.state) for i in infos] == [
            (False, BPState.NONE),
            (True, BPState.RELEASED),
        ]

    def test_before_and_after_on_same_step_are_two_entries_in_order(self) -> None:
        infos = compute_breakpoints(meta(), [step("a", break_before=["l"], break_after=["l"])])
        assert [i.position for i in infos] == ["before", "after"]

    def test_terminal_dag_never_reports_blocked(self) -> None:
        recs = [step("a", break_before=["x"])]
        infos = compute_breakpoints(meta(DAGStatus.CANCELED, active=["x"]), recs)
        assert count_blocked(infos) == 0


class TestSignals:
    def test_buffered_signal_without_waiters_and_awaited_signal(self) -> None:
        recs = [step("w", wait_signals=["go"]), step("w2", wait_signals=["go"]), step("x")]
        infos = compute_signals(meta(), recs, [signal("early", b'"p"', at=3)])
        assert [(i.name, i.delivered, i.waiting) for i in infos] == [
            ("early", True, []),
            ("go", False, ["w", "w2"]),
        ]
        assert infos[0].delivered_at == T0 + timedelta(seconds=3)
        assert count_waiting_steps(infos) == 2

    def test_waiters_listed_regardless_of_deps(self) -> None:
        recs = [step("a", status=R), step("w", ["a"], wait_signals=["go"])]
        assert compute_signals(meta(), recs, None)[0].waiting == ["w"]

    def test_done_steps_never_wait(self) -> None:
        assert (
            compute_signals(meta(), [step("w", status=D, wait_signals=["go"])], {})[0].waiting == []
        )

    def test_terminal_dag_reports_no_waiters(self) -> None:
        recs = [step("w", wait_signals=["go"])]
        assert compute_signals(meta(DAGStatus.FAILED), recs, None)[0].waiting == []

    def test_count_waiting_steps_counts_distinct_steps(self) -> None:
        recs = [step("w", wait_signals=["a", "b"])]
        assert count_waiting_steps(compute_signals(meta(), recs, None)) == 1


@pytest.mark.parametrize(
    ("have", "want", "ok"),
    [
        ([], [], True),
        (["a"], [], True),
        (["a", "b"], ["a"], True),
        (["a", "b"], ["b", "a"], True),
        (["a"], ["a", "c"], False),
        ([], ["a"], False),
    ],
)
def test_matches_labels_and_semantics(have: list[str], want: list[str], ok: bool) -> None:
    assert matches_labels(meta(labels=have), want) is ok


@pytest.mark.parametrize(
    ("d", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(microseconds=1), "1.0µs"),
        (timedelta(microseconds=1500), "1.5ms"),
        (timedelta(milliseconds=5), "5.0ms"),
        (timedelta(seconds=4.56), "4.56s"),
        (timedelta(seconds=65), "1m5s"),
        (timedelta(seconds=65.9), "1m5s"),
        (timedelta(hours=2, seconds=3), "2h0m3s"),
    ],
)
def test_human_duration(d: timedelta, text: str) -> None:
    assert human_duration(d) == text


class TestWriteDebug:
    def test_report_layout(self) -> None:
        recs = [
            timed("fetch", D, q=5, e=100),
            step("enrich", status=F, optional=True, error_kind="validation", worker_id="w1"),
            step("combine", ["fetch", "enrich"], status=S),
            step("wait", ["fetch"], wait_signals=["go"]),
            step("gone", status=C),
        ]
        for r in recs:
            r.added_at = T0
        m = meta(labels=["billing", "nightly"])
        text = render(build_debug(m, recs, None, NOW))
        lines = text.splitlines()
        assert lines[0] == "DAG d  [RUNNING]  created 1m30s ago  ⚑ 1 waiting on signal"
        assert lines[1] == "  steps: 1 done, 1 failed, 1 skipped, 1 canceled, 1 pending, 0 running"
        assert lines[2] == "  labels: billing, nightly"
        assert lines[3] == ""
        rows = {line.split()[1]: line for line in lines[4:9]}
        assert rows["fetch"].startswith("  ✓  combine".replace("combine", "fetch"))
        assert "queue 5.0ms" in rows["fetch"]
        assert "exec 100.0ms" in rows["fetch"]
        assert rows["enrich"].endswith("optional worker=w1 kind=validation")
        assert rows["combine"].endswith("(cascade)")
        assert "queue —" in rows["combine"]
        assert rows["wait"].endswith("sig:waiting[go]")
        assert rows["gone"].endswith("(canceled)")
        # Columns are aligned: every row puts "queue" at the same offset.
        assert len({line.index("queue") for line in lines[4:9]}) == 1
        assert "  blockers:" in lines
        assert "    wait waiting on signal: [go]" in lines
        assert "  signals:" in lines
        assert "    go  awaited  ⚑ waiting [wait]" in lines

    def test_blockers_none_and_no_optional_sections(self) -> None:
        recs = [timed("a", D, q=0, e=200)]
        text = render(build_debug(meta(DAGStatus.DONE), recs, None, NOW))
        assert text.splitlines()[0] == "DAG d  [DONE]  created 1m30s ago  total 200.0ms"
        assert "  blockers: none" in text
        assert "breakpoints:" not in text
        assert "signals:" not in text
        assert "labels:" not in text

    def test_blocker_waiting_on_line(self) -> None:
        text = render(build_debug(meta(), [step("a", status=R), step("b", ["a"])], None, NOW))
        assert "    b waiting on: [a]" in text.splitlines()

    def test_breakpoint_and_signal_sections(self) -> None:
        recs = [
            step("a", status=D, break_after=["x"], bp_blocked_at=T0 + timedelta(seconds=80)),
            step("b", ["a"]),
            step("c", break_before=["z"]),
            step("r", break_before=["x"], bp_before=BPState.RELEASED, status=D),
        ]
        dbg = build_debug(meta(active=["x"]), recs, [signal("s", at=60)], NOW)
        lines = render(dbg).splitlines()
        assert "⦿ 1 at breakpoint" in lines[0]
        assert "    a after [x]  armed  ⦿ blocked 10.00s ago  holding [b]" in lines
        assert "    c before [z]  inactive" in lines
        assert "    r before [x]  armed  released" in lines
        assert "    s  delivered 30.00s ago" in lines
        assert "    b gated by after-bp: [a]" in lines
        assert any("bp:holding[x]→{b}" in line for line in lines)
        assert any(line.strip().endswith("bp:released") for line in lines)

    def test_paused_header_and_before_blocked_note(self) -> None:
        m = meta(DAGStatus.PAUSED, active=["x"], paused_at=T0 + timedelta(seconds=60))
        text = render(build_debug(m, [step("a", break_before=["x"], held=True)], None, NOW))
        head = text.splitlines()[0]
        assert head.startswith("DAG d  [PAUSED]  created 1m30s ago  paused 30.00s ago")
        assert "held bp:blocked[x]" in text
