"""Pure tests of ebind.workflow.graph: unknown deps, cycles, dynamic-step checks."""

from __future__ import annotations

import pytest
from wf_pure_helpers import step

from ebind.errors import CycleError, DuplicateStep, InvalidArguments
from ebind.workflow.graph import (
    check_dynamic_step,
    check_unknown_deps,
    find_cycle,
    graph_of,
    validate_graph,
)


def test_graph_of_merges_required_and_optional_deps_deduped() -> None:
    recs = [step("a"), step("b", ["a"], optional_deps=["a", "c"]), step("c")]
    assert graph_of(recs) == {"a": [], "b": ["a", "c"], "c": []}


def test_acyclic_graph_has_no_cycle() -> None:
    assert find_cycle({"a": [], "b": ["a"], "c": ["a", "b"]}) is None
    validate_graph({"a": [], "b": ["a"], "c": ["a", "b"]})


def test_ref_cycle_is_detected_with_its_path() -> None:
    assert find_cycle({"a": ["c"], "b": ["a"], "c": ["b"]}) == ["a", "c", "b", "a"]


def test_cycle_error_message_names_the_path() -> None:
    with pytest.raises(CycleError, match="cycle detected in DAG 'd': a → b → a") as info:
        validate_graph({"a": ["b"], "b": ["a"]}, dag_id="d")
    assert info.value.step_id == "a"


def test_self_dependency_is_a_cycle() -> None:
    assert find_cycle({"a": ["a"]}) == ["a", "a"]


def test_cycle_reached_from_a_tail_reports_only_the_loop() -> None:
    assert find_cycle({"t": ["x"], "x": ["y"], "y": ["x"]}) == ["x", "y", "x"]


def test_after_only_cycle_is_detected() -> None:
    recs = [step("a", optional_deps=["b"]), step("b", ["a"])]
    with pytest.raises(CycleError):
        validate_graph(graph_of(recs))


def test_unknown_dependency_names_both_steps() -> None:
    with pytest.raises(InvalidArguments, match="step 'b' in DAG 'd' references unknown step 'x'"):
        check_unknown_deps({"a": [], "b": ["a", "x"]}, dag_id="d")


def test_validate_graph_reports_unknown_before_cycle() -> None:
    with pytest.raises(InvalidArguments, match="unknown step 'x'"):
        validate_graph({"a": ["b"], "b": ["a", "x"]})


def test_deep_chain_does_not_overflow() -> None:
    n = 20_000
    graph = {f"s{i}": [f"s{i - 1}"] if i else [] for i in range(n)}
    assert find_cycle(graph) is None
    graph["s0"] = [f"s{n - 1}"]
    cycle = find_cycle(graph)
    assert cycle is not None
    assert len(cycle) == n + 1


def test_dynamic_step_with_known_deps_passes() -> None:
    check_dynamic_step({"a": [], "b": ["a"]}, "c", ["a", "b"])


def test_dynamic_step_unknown_dep_is_rejected() -> None:
    with pytest.raises(InvalidArguments, match="step 'c' in DAG 'd' references unknown step 'zz'"):
        check_dynamic_step({"a": []}, "c", ["a", "zz"], dag_id="d")


def test_dynamic_step_depending_on_itself_is_a_cycle() -> None:
    with pytest.raises(CycleError, match="c → c"):
        check_dynamic_step({"a": []}, "c", ["a", "c"])


def test_dynamic_step_duplicate_id_is_rejected() -> None:
    with pytest.raises(DuplicateStep, match="duplicate step id 'a'"):
        check_dynamic_step({"a": []}, "a", [])


def test_dynamic_step_closing_a_cycle_with_a_forward_reference_is_rejected() -> None:
    """An existing step that (wrongly) names the new id would close a loop through it."""
    with pytest.raises(CycleError, match="c → a → c"):
        check_dynamic_step({"a": ["c"]}, "c", ["a"])
