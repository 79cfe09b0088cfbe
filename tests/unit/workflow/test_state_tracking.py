"""DAGState keeps its live and failed step sets right however the engine replaces records."""

from __future__ import annotations

from typing import Any

import msgspec
from wf_pure_helpers import C, D, F, P, R, S, state, step

from ebind.workflow.state import DAGState
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


# Wide enough that the readiness check remembers how far it got.
N = 20


def _fan_in(n: int) -> DAGState:
    leaves = [step(f"l{i}", status=R, added=i) for i in range(n)]
    return state(*leaves, step("sum", [f"l{i}" for i in range(n)], added=n))


def _finish(st: DAGState, sid: str, status: StepStatus = D, **kw: Any) -> None:
    st.steps[sid] = msgspec.structs.replace(st.steps[sid], status=status, **kw)


def _all_done(**kw: Any) -> DAGState:
    """A fan-in of ``N`` leaves, every leaf finished (with ``kw``) and the check made once."""
    st = _fan_in(N)
    for i in range(N):
        _finish(st, f"l{i}", **kw)
    assert st.deps_satisfied("sum")
    return st


def test_a_fan_in_is_ready_only_after_its_last_dependency_in_any_order() -> None:
    n = 50
    for order in (range(n), reversed(range(n)), [*range(1, n, 2), *range(0, n, 2)]):
        st = _fan_in(n)
        for done, i in enumerate(order, 1):
            assert not st.deps_satisfied("sum")
            _finish(st, f"l{i}")
            assert st.deps_satisfied("sum") is (done == n)


def test_a_fan_in_check_does_not_rescan_settled_dependencies() -> None:
    n = 2000
    st = _fan_in(n)
    reads = 0
    steps = st.steps
    original_get = type(steps).get

    class Counting(type(steps)):  # type: ignore[misc]
        def get(self, key: str, default: Any = None) -> Any:
            nonlocal reads
            reads += 1
            return original_get(self, key, default)

    counted = Counting(steps)
    st.steps = counted
    for i in range(n):
        _finish(st, f"l{i}")
        st.deps_satisfied("sum")
    # A few reads per check (the record replaced, the step itself, the dependency passed
    # and the one that blocks), not the n * n / 2 of a rescan from the first dependency.
    assert reads < 10 * n


def test_a_settled_dependency_that_goes_back_to_live_blocks_again() -> None:
    st = _all_done()
    _finish(st, "l0", R)  # a retry reset the record
    assert not st.deps_satisfied("sum")
    _finish(st, "l0")
    assert st.deps_satisfied("sum")


def test_a_deleted_or_replaced_dependency_blocks_again() -> None:
    st = _all_done()
    del st.steps["l1"]
    assert not st.deps_satisfied("sum")
    st = _all_done()
    # A caller may swap in a plain dict with other records: nothing seen before counts.
    st.steps = {**st.steps, "l9": msgspec.structs.replace(st.steps["l9"], status=R)}
    assert not st.deps_satisfied("sum")


def test_a_done_dependency_with_an_after_breakpoint_is_checked_every_time() -> None:
    st = _all_done(break_after=("bp",))  # nothing armed
    st.meta = msgspec.structs.replace(st.meta, active_breakpoints=["bp"])
    assert not st.deps_satisfied("sum")  # armed later: the done step holds its dependents
    st.meta = msgspec.structs.replace(st.meta, active_breakpoints=[])
    assert st.deps_satisfied("sum")


def test_the_fan_in_record_replaced_with_other_deps_is_scanned_afresh() -> None:
    st = _all_done()
    st.steps["late"] = step("late", status=R, added=9)
    deps = (*st.steps["sum"].deps, "late")
    st.steps["sum"] = msgspec.structs.replace(st.steps["sum"], deps=deps)
    assert not st.deps_satisfied("sum")


def test_step_records_are_left_to_reference_counting() -> None:
    import gc

    rec = step("a", ["b"], status=D, trace_ctx={"traceparent": "x"})
    # Not walked by the cycle collector: a large DAG holds tens of thousands of them.
    assert not gc.is_tracked(rec)
    assert not gc.is_tracked(msgspec.structs.replace(rec, status=R))
    assert not gc.is_tracked(msgspec.json.decode(msgspec.json.encode(rec), type=type(rec)))
