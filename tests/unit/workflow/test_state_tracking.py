"""DAGState keeps its live and failed step sets right however the engine replaces records."""

from __future__ import annotations

import msgspec
from wf_pure_helpers import C, D, F, P, R, S, state, step

from ebind.workflow.types import StepStatus


def test_records_replaced_in_place_update_terminal_and_cascade_roots() -> None:
    st = state(step("a", status=R, added=1), step("b", ["a"], added=2), step("c", ["b"], added=3))
    assert not st.all_steps_terminal()
    # The engine and scheduler write fresh records straight into the map.
    st.steps["a"] = msgspec.structs.replace(st.steps["a"], status=F)
    assert st.apply_cascades() == ["b", "c"]
    assert st.all_steps_terminal()
    st.steps["a"] = msgspec.structs.replace(st.steps["a"], status=R)  # e.g. a retry reset
    assert not st.all_steps_terminal()
    assert st.apply_cascades() == []  # b and c stay skipped: they are the roots now, no targets


def test_cascade_roots_follow_step_order_not_change_order() -> None:
    st = state(
        step("x", status=P, added=1),
        step("y", status=P, added=2),
        step("after_y", ["y"], added=3),
        step("after_x", ["x"], added=4),
    )
    st.steps["y"] = msgspec.structs.replace(st.steps["y"], status=S)
    st.steps["x"] = msgspec.structs.replace(st.steps["x"], status=C)
    assert st.apply_cascades() == ["after_x", "after_y"]


def test_a_step_put_in_without_add_step_is_still_tracked() -> None:
    st = state(step("a", status=D, added=1))
    assert st.all_steps_terminal()
    st.steps["late"] = step("late", status=F, added=2)
    st.steps["dep"] = step("dep", ["late"], added=3)
    assert not st.all_steps_terminal()
    assert st.apply_cascades() == ["dep"]
    assert st.steps["dep"].status is StepStatus.SKIPPED and st.all_steps_terminal()


def test_deleted_steps_leave_the_sets() -> None:
    st = state(step("a", status=D), step("b", status=R))
    del st.steps["b"]
    assert st.all_steps_terminal()
