"""Pure tests of DAGState: every seed-doc sentence, cascade rules, gates and terminal status."""

from __future__ import annotations

import msgspec
import pytest
from wf_pure_helpers import T0, C, D, F, P, R, S, signal, state, statuses, step

from ebind.errors import DuplicateStep, StepNotFound
from ebind.workflow.ref import make_ref, make_ref_or_default, signal_ref
from ebind.workflow.state import DAGState
from ebind.workflow.types import BPState, DAGStatus, StepStatus


def chain() -> DAGState:
    """a -> b (Ref a) -> c (Ref b)."""
    return state(
        step("a"),
        step("b", ["a"], args=[make_ref("a")]),
        step("c", ["b"], args=[make_ref("b")]),
    )


class TestTransitions:
    def test_mark_done_unlocks_dependent(self) -> None:
        st = chain()
        assert st.ready_to_run() == ["a"]
        assert st.mark_done("a") == ["b"]
        assert st.steps["a"].status is D
        assert st.steps["a"].finished_at == T0

    def test_mark_done_returns_all_ready_steps(self) -> None:
        st = state(step("a"), step("b"), step("c", ["a"]))
        assert st.mark_done("a") == ["b", "c"]

    def test_mark_done_is_idempotent(self) -> None:
        st = chain()
        st.mark_done("a")
        before = dict(st.steps)
        st.take_changed()
        assert st.mark_done("a") == ["b"]
        assert st.steps == before
        assert st.take_changed() == []

    def test_mark_done_unknown_step_raises(self) -> None:
        with pytest.raises(StepNotFound, match="step 'zz' not found in DAG 'd'"):
            chain().mark_done("zz")

    def test_mark_done_does_not_mutate_callers_records(self) -> None:
        rec = step("a")
        st = state(rec)
        st.mark_done("a")
        assert rec.status is P

    def test_mark_failed_cascades_skip_transitively_to_required_dependents(self) -> None:
        st = chain()
        ready, skipped = st.mark_failed("a", "handler", "boom")
        assert (ready, skipped) == ([], ["b", "c"])
        assert statuses(st) == {"a": F, "b": S, "c": S}
        assert st.steps["b"].finished_at == T0

    def test_mark_failed_stores_kind_and_message(self) -> None:
        st = chain()
        st.mark_failed("a", "validation", "bad input")
        assert (st.steps["a"].error_kind, st.steps["a"].error_message) == (
            "validation",
            "bad input",
        )

    def test_mark_failed_on_already_failed_leaf_returns_nothing(self) -> None:
        st = state(step("a"))
        st.mark_failed("a", "k", "m")
        assert st.mark_failed("a", "k2", "m2") == ([], [])
        assert st.steps["a"].error_kind == "k"

    def test_mark_failed_after_done_changes_nothing(self) -> None:
        """A duplicate/reordered failed event never overrides a done step (a Go bug, fixed here)."""
        st = chain()
        st.mark_done("a")
        st.take_changed()
        assert st.mark_failed("a", "k", "m") == (["b"], [])
        assert statuses(st) == {"a": D, "b": P, "c": P}
        assert st.take_changed() == []

    def test_mark_skipped_after_done_changes_nothing(self) -> None:
        st = chain()
        st.mark_done("a")
        assert st.mark_skipped("a") == []
        assert st.steps["a"].status is D

    def test_mark_done_after_failed_changes_nothing(self) -> None:
        st = chain()
        st.mark_failed("a", "k", "m")
        st.mark_done("a")
        assert statuses(st) == {"a": F, "b": S, "c": S}

    def test_mark_failed_reapplies_cascade_when_already_failed(self) -> None:
        """A redelivered failure re-applies a cascade whose persistence was lost."""
        st = state(step("a", status=F), step("b", ["a"]))
        assert st.mark_failed("a", "k", "m") == ([], ["b"])

    def test_mark_skipped_cascades_and_returns_cascaded_ids(self) -> None:
        st = chain()
        assert st.mark_skipped("a") == ["b", "c"]
        assert st.steps["a"].status is S

    def test_mark_skipped_is_idempotent(self) -> None:
        st = chain()
        st.mark_skipped("a")
        assert st.mark_skipped("a") == []

    def test_cascade_skips_running_dependents_too(self) -> None:
        st = state(step("a"), step("b", ["a"], status=R))
        assert st.mark_failed("a", "k", "m")[1] == ["b"]

    def test_cascade_never_touches_terminal_dependents(self) -> None:
        st = state(step("a"), step("b", ["a"], status=D), step("c", ["a"], status=C))
        assert st.mark_failed("a", "k", "m")[1] == []
        assert statuses(st)["b"] is D

    def test_take_changed_lists_every_changed_step_once(self) -> None:
        st = chain()
        st.mark_failed("a", "k", "m")
        assert st.take_changed() == ["a", "b", "c"]
        assert st.take_changed() == []

    def test_mark_running_moves_only_pending_unheld_steps(self) -> None:
        st = state(step("a"), step("b", held=True), step("c", status=D))
        assert st.mark_running("a")
        assert not st.mark_running("a")
        assert not st.mark_running("b")
        assert not st.mark_running("c")
        assert statuses(st) == {"a": R, "b": P, "c": D}


class TestCascadeRules:
    def test_ref_or_default_prevents_cascade_and_makes_dependent_ready(self) -> None:
        st = state(step("a"), step("b", ["a"], args=[make_ref_or_default("a", b"99")]))
        assert st.mark_failed("a", "k", "m") == (["b"], [])

    def test_ref_or_default_nested_in_list_and_dict_prevents_cascade(self) -> None:
        args = [[1, {"x": make_ref_or_default("a", b"0")}]]
        st = state(step("a"), step("b", ["a"], args=args))
        assert st.mark_failed("a", "k", "m") == (["b"], [])

    def test_required_ref_beside_or_default_to_same_upstream_still_cascades(self) -> None:
        args = [make_ref_or_default("a", b"0"), {"k": make_ref("a")}]
        st = state(step("a"), step("b", ["a"], args=args))
        assert st.mark_failed("a", "k", "m")[1] == ["b"]

    def test_after_cascades(self) -> None:
        st = state(step("a"), step("b", ["a"]))
        assert st.mark_failed("a", "k", "m")[1] == ["b"]

    def test_after_terminal_parent_enables_run(self) -> None:
        st = state(step("a"), step("b", ["a"]))
        assert st.mark_done("a") == ["b"]

    def test_after_any_does_not_cascade_and_becomes_ready(self) -> None:
        st = state(step("a"), step("b", optional_deps=["a"]))
        assert st.mark_failed("a", "k", "m") == (["b"], [])

    def test_after_any_waits_for_terminal(self) -> None:
        st = state(step("a", status=R), step("b", optional_deps=["a"]))
        assert st.ready_to_run() == []

    def test_after_any_step_is_not_skipped_by_a_skipped_upstream(self) -> None:
        st = state(step("a"), step("b", ["a"]), step("c", optional_deps=["b"]))
        assert st.mark_failed("a", "k", "m") == (["c"], ["b"])

    def test_mixed_or_default_and_after_exemption_is_per_upstream(self) -> None:
        def build() -> DAGState:
            return state(
                step("a"),
                step("c"),
                step("x", ["a", "c"], args=[make_ref_or_default("a", b"0")]),
            )

        st = build()
        assert st.mark_failed("a", "k", "m")[1] == []
        st = build()
        assert st.mark_failed("c", "k", "m")[1] == ["x"]

    def test_or_default_and_after_on_same_upstream_is_not_skipped(self) -> None:
        st = state(step("a"), step("x", ["a"], args=[make_ref_or_default("a", b"0")]))
        assert st.mark_failed("a", "k", "m") == (["x"], [])

    def test_cascade_stops_at_or_default_but_continues_elsewhere(self) -> None:
        st = state(
            step("a"),
            step("b", ["a"], args=[make_ref("a")]),
            step("c", ["b"], args=[make_ref_or_default("b", b"1")]),
            step("d", ["b"]),
        )
        assert st.mark_failed("a", "k", "m") == (["c"], ["b", "d"])

    def test_fan_in_waits_for_every_parent(self) -> None:
        st = state(step("a"), step("b"), step("c", ["a", "b"]))
        assert st.mark_done("a") == ["b"]
        assert st.mark_done("b") == ["c"]

    def test_fan_out_cascade_skips_every_branch(self) -> None:
        st = state(step("a"), step("b", ["a"]), step("c", ["a"]), step("d", ["b", "c"]))
        assert st.mark_failed("a", "k", "m")[1] == ["b", "c", "d"]

    def test_cascade_passes_through_steps_blocked_at_gates(self) -> None:
        st = state(
            step("a"),
            step("b", ["a"], break_before=["bp"], wait_signals=["go"], held=True),
            step("c", ["b"]),
            active=["bp"],
        )
        assert st.mark_failed("a", "k", "m")[1] == ["b", "c"]

    def test_signal_ref_is_not_a_dependency_and_never_cascades(self) -> None:
        st = state(step("a"), step("b", args=[signal_ref("go")], wait_signals=["go"]))
        assert st.mark_failed("a", "k", "m")[1] == []

    def test_failed_required_dep_still_cascades_a_signal_waiter(self) -> None:
        st = state(step("a"), step("b", ["a"], wait_signals=["go"]))
        assert st.mark_failed("a", "k", "m")[1] == ["b"]

    def test_apply_cascades_recovers_lost_cascade(self) -> None:
        st = state(step("a", status=F), step("b", ["a"]), step("c", ["b"]), step("x", ["a"]))
        assert st.ready_to_run() == []
        assert st.apply_cascades() == ["b", "x", "c"]
        assert st.apply_cascades() == []

    def test_after_only_dependent_of_failed_step_is_never_ready(self) -> None:
        """The Go sweep ran such a step when the failure event was lost."""
        st = state(step("a", status=F), step("b", ["a"]))
        assert st.ready_to_run() == []
        assert st.doomed("b")

    def test_canceled_required_dep_dooms_dependent(self) -> None:
        st = state(step("a", status=C), step("b", ["a"]))
        assert st.ready_to_run() == []
        assert st.apply_cascades() == ["b"]


class TestReadiness:
    def test_ready_to_run_waits_for_running_dep(self) -> None:
        st = state(step("a", status=R), step("b", ["a"]))
        assert st.ready_to_run() == []

    def test_ready_to_run_never_returns_non_pending_steps(self) -> None:
        st = state(*(step(str(s.value), status=s) for s in StepStatus))
        assert st.ready_to_run() == ["pending"]

    def test_ready_to_run_order_is_added_at_then_insertion(self) -> None:
        st = state(step("z", added=2), step("y", added=1), step("x", added=1), step("w"))
        assert st.ready_to_run() == ["w", "y", "x", "z"]

    def test_dependency_on_missing_step_is_never_satisfied(self) -> None:
        st = state(step("b", ["ghost"]))
        assert st.ready_to_run() == []
        assert not st.deps_satisfied("b")

    def test_add_step_dynamic_becomes_ready(self) -> None:
        st = state(step("a", status=D))
        st.add_step(step("dyn", ["a"]))
        assert st.ready_to_run() == ["dyn"]
        assert st.steps["dyn"].added_at == T0
        assert st.take_changed() == ["dyn"]

    def test_add_step_duplicate_raises(self) -> None:
        st = state(step("a"))
        with pytest.raises(DuplicateStep, match="duplicate step id 'a' in DAG 'd'"):
            st.add_step(step("a"))

    def test_add_step_keeps_given_added_at(self) -> None:
        st = state()
        st.add_step(step("a", added=5))
        assert st.steps["a"].added_at is not None
        assert st.steps["a"].added_at > T0

    def test_from_records_builds_maps(self) -> None:
        st = DAGState.from_records(state().meta, [step("a"), step("b", ["a"])], [signal("go")])
        assert list(st.steps) == ["a", "b"]
        assert list(st.signals) == ["go"]


class TestGates:
    def test_held_step_is_not_ready(self) -> None:
        st = state(step("a", held=True))
        assert st.ready_to_run() == []
        assert st.is_held("a")

    def test_armed_before_breakpoint_blocks(self) -> None:
        st = state(step("a", break_before=["bp"]), active=["bp"])
        assert st.ready_to_run() == []
        assert st.blocked_at_before() == ["a"]

    def test_inactive_before_breakpoint_runs(self) -> None:
        st = state(step("a", break_before=["bp"]), active=["other"])
        assert st.ready_to_run() == ["a"]
        assert st.blocked_at_before() == []

    def test_released_before_breakpoint_runs(self) -> None:
        st = state(step("a", break_before=["bp"], bp_before=BPState.RELEASED), active=["bp"])
        assert st.ready_to_run() == ["a"]

    def test_any_label_arms_a_breakpoint(self) -> None:
        st = state(step("a", break_before=["x", "y"]), active=["y"])
        assert st.before_bp_blocked("a")

    def test_advisory_blocked_mark_without_armed_label_does_not_block(self) -> None:
        st = state(step("a", break_before=["x"], bp_before=BPState.BLOCKED))
        assert st.ready_to_run() == ["a"]

    def test_blocked_at_before_requires_satisfied_deps(self) -> None:
        st = state(step("a"), step("b", ["a"], break_before=["bp"]), active=["bp"])
        assert st.blocked_at_before() == []
        st.mark_done("a")
        assert st.blocked_at_before() == ["b"]

    def test_blocked_at_before_ignores_held_and_signals(self) -> None:
        st = state(step("a", break_before=["bp"], held=True, wait_signals=["s"]), active=["bp"])
        assert st.blocked_at_before() == ["a"]

    def test_armed_after_breakpoint_gates_required_and_optional_dependents(self) -> None:
        st = state(
            step("a", break_after=["bp"]),
            step("b", ["a"]),
            step("c", optional_deps=["a"]),
            active=["bp"],
        )
        assert st.mark_done("a") == []
        assert st.holding_at_after() == ["a"]

    def test_fan_in_stays_gated_by_after_breakpoint(self) -> None:
        st = state(step("a", break_after=["bp"]), step("b"), step("c", ["a", "b"]), active=["bp"])
        st.mark_done("a")
        assert st.mark_done("b") == []

    def test_released_after_breakpoint_frees_dependents(self) -> None:
        st = state(
            step("a", status=D, break_after=["bp"], bp_after=BPState.RELEASED),
            step("b", ["a"]),
            active=["bp"],
        )
        assert st.ready_to_run() == ["b"]
        assert st.holding_at_after() == []

    def test_failed_parent_with_after_breakpoint_cascades_instead(self) -> None:
        st = state(step("a", break_after=["bp"]), step("b", ["a"]), active=["bp"])
        assert st.mark_failed("a", "k", "m")[1] == ["b"]
        assert st.holding_at_after() == []

    def test_not_blocked_at_before_behind_after_gated_parent(self) -> None:
        st = state(
            step("a", status=D, break_after=["bp"]),
            step("b", ["a"], break_before=["bp"]),
            active=["bp"],
        )
        assert st.holding_at_after() == ["a"]
        assert st.blocked_at_before() == []

    def test_holding_at_after_only_for_done_steps(self) -> None:
        st = state(
            *(step(s.value, status=s, break_after=["bp"]) for s in StepStatus), active=["bp"]
        )
        assert st.holding_at_after() == ["done"]

    def test_signal_gate_blocks_with_nil_signal_map(self) -> None:
        st = state(step("a", wait_signals=["go"]), signals=None)
        assert st.ready_to_run() == []
        assert st.waiting_on_signals() == ["a"]

    def test_signal_gate_requires_all_names(self) -> None:
        st = state(step("a", wait_signals=["x", "y"]), signals=[signal("x")])
        assert st.ready_to_run() == []
        assert st.undelivered_signals("a") == ["y"]
        st.add_signal(signal("y"))
        assert st.ready_to_run() == ["a"]

    def test_add_signal_is_first_wins(self) -> None:
        st = state(signals=[signal("x", b"1")])
        assert not st.add_signal(signal("x", b"2"))
        payload = st.signals["x"].payload
        assert payload is not None
        assert bytes(payload) == b"1"

    def test_waiting_on_signals_requires_satisfied_deps(self) -> None:
        st = state(step("a"), step("b", ["a"], wait_signals=["go"]))
        assert st.waiting_on_signals() == []
        st.mark_done("a")
        assert st.waiting_on_signals() == ["b"]

    @pytest.mark.parametrize(
        ("held", "armed", "delivered", "ready"),
        [
            (False, False, True, True),
            (True, False, True, False),
            (False, True, True, False),
            (False, False, False, False),
            (True, True, False, False),
        ],
    )
    def test_three_fences_compose_independently(
        self, held: bool, armed: bool, delivered: bool, ready: bool
    ) -> None:
        st = state(
            step("a", held=held, break_before=["bp"], wait_signals=["go"]),
            active=["bp"] if armed else [],
            signals=[signal("go")] if delivered else [],
        )
        assert (st.ready_to_run() == ["a"]) is ready

    def test_dep_blocks_reports_missing_live_and_holding_deps(self) -> None:
        st = state(
            step("live", status=R),
            step("held", status=D, break_after=["bp"]),
            step("ok", status=F),
            active=["bp"],
        )
        assert st.dep_blocks("ghost")
        assert st.dep_blocks("live")
        assert st.dep_blocks("held")
        assert not st.dep_blocks("ok")


class TestTerminal:
    def test_all_done_is_done(self) -> None:
        st = state(step("a", status=D), step("b", status=D))
        assert st.terminal() == (DAGStatus.DONE, True)

    def test_mandatory_failed_is_failed(self) -> None:
        st = state(step("a", status=F), step("b", status=S))
        assert st.terminal() == (DAGStatus.FAILED, True)

    def test_mandatory_skipped_is_failed(self) -> None:
        st = state(step("a", status=D), step("b", status=S))
        assert st.terminal() == (DAGStatus.FAILED, True)

    def test_optional_failed_is_done(self) -> None:
        st = state(step("a", status=F, optional=True), step("b", status=D))
        assert st.terminal() == (DAGStatus.DONE, True)

    def test_optional_step_failure_does_not_fail_dag_via_or_default(self) -> None:
        st = state(
            step("a", optional=True),
            step("b", ["a"], args=[make_ref_or_default("a", b"0")]),
        )
        assert st.mark_failed("a", "k", "m") == (["b"], [])
        st.mark_done("b")
        assert st.terminal() == (DAGStatus.DONE, True)

    def test_canceled_steps_do_not_count_as_failures(self) -> None:
        st = state(step("a", status=D), step("b", status=C))
        assert st.terminal() == (DAGStatus.DONE, True)
        assert st.derive_final_status() is DAGStatus.DONE

    def test_still_running(self) -> None:
        st = state(step("a", status=D), step("b", status=R))
        assert st.terminal() == (DAGStatus.RUNNING, False)

    def test_canceled_meta_is_canceled(self) -> None:
        st = state(step("a", status=C), step("b", status=D), status=DAGStatus.CANCELED)
        assert st.terminal() == (DAGStatus.CANCELED, True)

    def test_canceled_meta_with_live_step_is_not_terminal(self) -> None:
        st = state(step("a", status=R), status=DAGStatus.CANCELED)
        assert st.terminal() == (DAGStatus.RUNNING, False)

    @pytest.mark.parametrize("meta_status", [DAGStatus.PAUSING, DAGStatus.PAUSED])
    def test_paused_or_pausing_with_all_terminal_stays_running(
        self, meta_status: DAGStatus
    ) -> None:
        st = state(step("a", status=D), status=meta_status)
        assert st.terminal() == (DAGStatus.RUNNING, False)

    def test_zero_steps_is_done(self) -> None:
        assert state().terminal() == (DAGStatus.DONE, True)

    def test_blocked_at_breakpoint_or_signal_stays_running(self) -> None:
        st = state(step("a", break_before=["bp"]), step("b", wait_signals=["s"]), active=["bp"])
        assert st.terminal() == (DAGStatus.RUNNING, False)

    def test_after_breakpoint_on_leaf_does_not_prevent_finalization(self) -> None:
        st = state(step("a", break_after=["bp"]), active=["bp"])
        st.mark_done("a")
        assert st.terminal() == (DAGStatus.DONE, True)

    def test_all_steps_terminal(self) -> None:
        assert not state().all_steps_terminal()
        assert not state(step("a", status=R)).all_steps_terminal()
        assert state(step("a", status=S)).all_steps_terminal()

    def test_derive_final_status(self) -> None:
        assert state(step("a", status=D)).derive_final_status() is DAGStatus.DONE
        assert state(step("a", status=F)).derive_final_status() is DAGStatus.FAILED
        assert state(step("a", status=S)).derive_final_status() is DAGStatus.FAILED
        assert state(step("a", status=S, optional=True)).derive_final_status() is DAGStatus.DONE


class TestPauseQueries:
    def test_has_in_flight_steps(self) -> None:
        assert not state(step("a"), step("b", status=D)).has_in_flight_steps()
        assert state(step("a", status=R)).has_in_flight_steps()

    @pytest.mark.parametrize(
        ("meta_status", "can_pause", "can_resume"),
        [
            (DAGStatus.RUNNING, True, False),
            (DAGStatus.PAUSING, False, False),
            (DAGStatus.PAUSED, False, True),
            (DAGStatus.DONE, False, False),
            (DAGStatus.FAILED, False, False),
            (DAGStatus.CANCELED, False, False),
        ],
    )
    def test_can_pause_and_can_resume_per_status(
        self, meta_status: DAGStatus, can_pause: bool, can_resume: bool
    ) -> None:
        st = state(status=meta_status)
        assert (st.can_pause(), st.can_resume()) == (can_pause, can_resume)

    def test_paused_at_round_trips_through_json(self) -> None:
        m = state(status=DAGStatus.PAUSED).meta
        m.paused_at = T0
        back = msgspec.json.decode(msgspec.json.encode(m), type=type(m))
        assert back.paused_at == T0
