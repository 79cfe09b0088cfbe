"""Pure tests of ebind.workflow.placement."""

from __future__ import annotations

import pytest
from wf_pure_helpers import step

from ebind.errors import PlacementError, WorkflowError
from ebind.workflow.placement import resolve_placement, resolve_target, rewrite_colocate_here
from ebind.workflow.types import PlacementMode, PlacementSpec, StepRecord, StepStatus

DIRECT, WITH, FOLLOW, HERE = (
    PlacementMode.DIRECT,
    PlacementMode.COLOCATE_WITH,
    PlacementMode.FOLLOW_TARGET_OF,
    PlacementMode.COLOCATE_HERE,
)


def steps(*recs: StepRecord) -> dict[str, StepRecord]:
    return {r.step_id: r for r in recs}


def test_no_placement_is_untargeted() -> None:
    assert resolve_placement("a", steps(step("a"))) == ""


def test_direct_placement_is_the_target() -> None:
    s = steps(step("a", placement=PlacementSpec(mode=DIRECT, target="gpu")))
    assert resolve_placement("a", s) == "gpu"


def test_direct_placement_with_empty_target_errors() -> None:
    s = steps(step("a", placement=PlacementSpec(mode=DIRECT)))
    with pytest.raises(PlacementError, match="step 'a' has direct placement with an empty target"):
        resolve_placement("a", s)


def test_colocate_with_uses_upstream_worker() -> None:
    s = steps(
        step("a", status=StepStatus.DONE, worker_id="w-7"),
        step("b", ["a"], placement=PlacementSpec(mode=WITH, step_id="a")),
    )
    assert resolve_placement("b", s) == "worker:w-7"


def test_colocate_with_before_executor_errors() -> None:
    s = steps(step("a"), step("b", placement=PlacementSpec(mode=WITH, step_id="a")))
    with pytest.raises(
        PlacementError, match="step 'b' in DAG 'd' cannot colocate with 'a' before it has an exec"
    ) as info:
        resolve_placement("b", s, dag_id="d")
    assert info.value.step_id == "b"
    assert isinstance(info.value, WorkflowError)


def test_colocate_with_unknown_step_errors() -> None:
    s = steps(step("b", placement=PlacementSpec(mode=WITH, step_id="ghost")))
    with pytest.raises(PlacementError, match="step 'b' colocates with unknown step 'ghost'"):
        resolve_placement("b", s)


def test_follow_target_of_re_resolves_upstream_placement() -> None:
    s = steps(
        step("a", placement=PlacementSpec(mode=DIRECT, target="eu")),
        step("b", placement=PlacementSpec(mode=FOLLOW, step_id="a")),
        step("c", placement=PlacementSpec(mode=FOLLOW, step_id="b")),
    )
    assert resolve_placement("c", s) == "eu"


def test_follow_target_of_a_colocated_step_lands_on_its_executor() -> None:
    s = steps(
        step("x", worker_id="w1"),
        step("a", placement=PlacementSpec(mode=WITH, step_id="x")),
        step("b", placement=PlacementSpec(mode=FOLLOW, step_id="a")),
    )
    assert resolve_placement("b", s) == "worker:w1"


def test_follow_target_of_step_without_placement_errors() -> None:
    s = steps(step("a"), step("b", placement=PlacementSpec(mode=FOLLOW, step_id="a")))
    with pytest.raises(PlacementError, match="cannot follow target of 'a' without placement"):
        resolve_placement("b", s)


def test_follow_target_of_unknown_step_errors() -> None:
    s = steps(step("b", placement=PlacementSpec(mode=FOLLOW, step_id="nope")))
    with pytest.raises(PlacementError, match="step 'b' follows unknown step 'nope'"):
        resolve_placement("b", s)


def test_follow_chain_error_names_origin_and_failing_step() -> None:
    s = steps(
        step("x"),
        step("a", placement=PlacementSpec(mode=WITH, step_id="x")),
        step("b", placement=PlacementSpec(mode=FOLLOW, step_id="a")),
    )
    with pytest.raises(
        PlacementError, match=r"step 'b' \(following 'a'\) cannot colocate with 'x'"
    ):
        resolve_placement("b", s)


def test_placement_cycle_is_detected() -> None:
    s = steps(
        step("a", placement=PlacementSpec(mode=FOLLOW, step_id="b")),
        step("b", placement=PlacementSpec(mode=FOLLOW, step_id="a")),
    )
    with pytest.raises(PlacementError, match="placement cycle through 'a'"):
        resolve_placement("a", s)


def test_self_follow_is_a_cycle() -> None:
    s = steps(step("a", placement=PlacementSpec(mode=FOLLOW, step_id="a")))
    with pytest.raises(PlacementError, match="placement cycle"):
        resolve_placement("a", s)


def test_colocate_here_outside_handler_errors() -> None:
    s = steps(step("a", placement=PlacementSpec(mode=HERE)))
    with pytest.raises(PlacementError, match="uses colocate_here outside a running handler"):
        resolve_placement("a", s)


def test_rewrite_colocate_here_binds_to_parent() -> None:
    assert rewrite_colocate_here(PlacementSpec(mode=HERE), "parent") == PlacementSpec(
        mode=WITH, step_id="parent"
    )
    direct = PlacementSpec(mode=DIRECT, target="t")
    assert rewrite_colocate_here(direct, "parent") is direct
    assert rewrite_colocate_here(None, "parent") is None


def test_rewritten_colocate_here_resolves_to_parent_worker() -> None:
    spec = rewrite_colocate_here(PlacementSpec(mode=HERE), "p")
    s = steps(step("p", status=StepStatus.RUNNING, worker_id="w9"))
    assert resolve_target("dyn", spec, s) == "worker:w9"


def test_unknown_step_errors() -> None:
    with pytest.raises(PlacementError, match="step 'zz' is not a step of the DAG"):
        resolve_placement("zz", {})


def test_modeless_spec_with_target_is_direct() -> None:
    assert resolve_target("a", PlacementSpec(target="t"), {}) == "t"
