"""Pure placement resolution: a step's PlacementSpec -> the concrete target it is sent to.

Modes: ``direct`` (a logical claim or ``worker:<id>``), ``colocate_with`` (the exact worker
that executed another step), ``follow_target_of`` (another step's placement, re-resolved
now) and ``colocate_here`` (the worker running the parent handler; dynamic steps rewrite it
to ``colocate_with`` the parent before it is stored). ``""`` means untargeted.
"""

from __future__ import annotations

from collections.abc import Mapping

from ebind.errors import PlacementError
from ebind.workflow.types import PlacementMode, PlacementSpec, StepRecord

__all__ = ["WORKER_PREFIX", "resolve_placement", "resolve_target", "rewrite_colocate_here"]

WORKER_PREFIX = "worker:"


def rewrite_colocate_here(spec: PlacementSpec | None, parent_step_id: str) -> PlacementSpec | None:
    """For a dynamic step: turn ``colocate_here`` into ``colocate_with`` the parent step."""
    if spec is None or spec.mode is not PlacementMode.COLOCATE_HERE:
        return spec
    return PlacementSpec(mode=PlacementMode.COLOCATE_WITH, step_id=parent_step_id)


def resolve_placement(step_id: str, steps: Mapping[str, StepRecord], *, dag_id: str = "") -> str:
    """The concrete target of ``steps[step_id]`` now (``""`` = untargeted).

    Raises:
        PlacementError: the step or an upstream is missing, has no executor or placement
            yet, the chain of ``follow_target_of`` loops, or the mode is invalid here.
    """
    rec = steps.get(step_id)
    if rec is None:
        raise _Err(step_id, dag_id)("is not a step of the DAG")
    return resolve_target(step_id, rec.placement, steps, dag_id=dag_id)


def resolve_target(
    step_id: str,
    spec: PlacementSpec | None,
    steps: Mapping[str, StepRecord],
    *,
    dag_id: str = "",
) -> str:
    """The concrete target for ``spec`` placed on ``step_id`` (see resolve_placement)."""
    err, seen = _Err(step_id, dag_id), {step_id}
    while True:
        if spec is None or spec.mode is None:
            return spec.target if spec is not None else ""
        if spec.mode is PlacementMode.DIRECT:
            if not spec.target:
                raise err("has direct placement with an empty target")
            return spec.target
        if spec.mode is PlacementMode.COLOCATE_HERE:
            raise err(
                "uses colocate_here outside a running handler; "
                "use it only for steps added with from_context(ctx).step(...)"
            )
        up = _upstream(spec, steps, err)
        if spec.mode is PlacementMode.COLOCATE_WITH:
            if not up.worker_id:
                raise err(f"cannot colocate with {up.step_id!r} before it has an executor")
            return WORKER_PREFIX + up.worker_id
        # follow_target_of: continue with the upstream's own placement, re-resolved now.
        if up.placement is None:
            raise err(f"cannot follow target of {up.step_id!r} without placement")
        if up.step_id in seen:
            raise err(f"has a placement cycle through {up.step_id!r}")
        seen.add(up.step_id)
        err.via, spec = up.step_id, up.placement


def _upstream(spec: PlacementSpec, steps: Mapping[str, StepRecord], err: _Err) -> StepRecord:
    verb = "colocates with" if spec.mode is PlacementMode.COLOCATE_WITH else "follows"
    if not spec.step_id:
        raise err(f"{verb} no step (placement step_id is empty)")
    up = steps.get(spec.step_id)
    if up is None:
        raise err(f"{verb} unknown step {spec.step_id!r}")
    return up


class _Err:
    """Builds PlacementErrors for one step being placed, naming the step it follows."""

    def __init__(self, step_id: str, dag_id: str) -> None:
        self.step_id, self.dag_id, self.via = step_id, dag_id, ""

    def __call__(self, what: str) -> PlacementError:
        via = f" (following {self.via!r})" if self.via else ""
        where = f" in DAG {self.dag_id!r}" if self.dag_id else ""
        return PlacementError(
            f"workflow: step {self.step_id!r}{via}{where} {what}",
            dag_id=self.dag_id,
            step_id=self.step_id,
        )
