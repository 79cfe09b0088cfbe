"""Pure graph checks over step dependencies: unknown references and cycles.

A graph is a mapping ``step id -> dependency ids`` (required and optional together, since
both order execution), iterated in insertion order so the first cycle reported is stable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ebind.errors import CycleError, DuplicateStep, InvalidArguments
from ebind.workflow.types import StepRecord

__all__ = [
    "check_dynamic_step",
    "check_unknown_deps",
    "find_cycle",
    "graph_of",
    "validate_graph",
]

_WHITE, _GRAY, _BLACK = 0, 1, 2


def graph_of(records: Iterable[StepRecord]) -> dict[str, list[str]]:
    """The dependency graph of step records: required then optional deps, deduped."""
    return {r.step_id: list(dict.fromkeys([*r.deps, *r.optional_deps])) for r in records}


def check_unknown_deps(graph: Mapping[str, Sequence[str]], *, dag_id: str = "") -> None:
    """Raise if a step depends on an id that is not a step of the graph.

    Raises:
        InvalidArguments: names the step and the unknown dependency.
    """
    for step_id, deps in graph.items():
        for dep in deps:
            if dep not in graph:
                _raise_unknown(step_id, dep, dag_id)


def _raise_unknown(step_id: str, dep: str, dag_id: str) -> None:
    where = f" in DAG {dag_id!r}" if dag_id else ""
    raise InvalidArguments(
        f"step {step_id!r}{where} references unknown step {dep!r}; "
        "add that step first or remove the dependency",
        parameter=step_id,
    )


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """The first cycle found by a white/gray/black DFS in insertion order, or None.

    The cycle is returned as a closed path, e.g. ``["a", "b", "a"]``. Unknown deps are
    ignored here (see check_unknown_deps). Iterative, so deep chains cannot overflow.
    """
    color = dict.fromkeys(graph, _WHITE)
    for root in graph:
        if color[root] != _WHITE:
            continue
        color[root] = _GRAY
        path = [root]
        stack = [iter(graph[root])]
        while stack:
            dep = next(stack[-1], None)
            if dep is None:
                stack.pop()
                color[path.pop()] = _BLACK
                continue
            state = color.get(dep)
            if state == _GRAY:
                return [*path[path.index(dep) :], dep]
            if state == _WHITE:
                color[dep] = _GRAY
                path.append(dep)
                stack.append(iter(graph[dep]))
    return None


def _raise_cycle(cycle: list[str], dag_id: str) -> None:
    where = f" in DAG {dag_id!r}" if dag_id else ""
    raise CycleError(
        f"workflow: cycle detected{where}: {' → '.join(cycle)}; remove one of these dependencies",
        dag_id=dag_id,
        step_id=cycle[0],
    )


def validate_graph(graph: Mapping[str, Sequence[str]], *, dag_id: str = "") -> None:
    """Check a whole DAG at submit: no unknown dependency and no cycle.

    Raises:
        InvalidArguments: a dependency names no step.
        CycleError: the dependencies form a cycle (the message shows the path).
    """
    check_unknown_deps(graph, dag_id=dag_id)
    cycle = find_cycle(graph)
    if cycle is not None:
        _raise_cycle(cycle, dag_id)


def check_dynamic_step(
    graph: Mapping[str, Sequence[str]],
    step_id: str,
    deps: Sequence[str],
    *,
    dag_id: str = "",
) -> None:
    """Check that a step added to a running DAG is new, names known deps and closes no cycle.

    Raises:
        DuplicateStep: ``step_id`` is already a step of the DAG.
        InvalidArguments: a dependency names no step.
        CycleError: the new step would close a cycle (e.g. it depends on itself).
    """
    if step_id in graph:
        raise DuplicateStep(
            f"workflow: duplicate step id {step_id!r} in DAG {dag_id!r}",
            dag_id=dag_id,
            step_id=step_id,
        )
    for dep in deps:
        if dep != step_id and dep not in graph:
            _raise_unknown(step_id, dep, dag_id)
    # Any new cycle must pass through the new step, so the DFS starts there.
    cycle = find_cycle({step_id: list(deps), **graph})
    if cycle is not None:
        _raise_cycle(cycle, dag_id)
