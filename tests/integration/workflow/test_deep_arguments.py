"""Deeply nested step arguments and signal payloads: refused by name, or the step fails.

A worker dead-letters a task message nesting JSON deeper than ``MAX_NESTING`` before it can
read which DAG step it is, so such a message must never be sent: literal arguments too deep
are refused when the step is defined, a signal payload too deep when it is sent, and a step
whose arguments become too deep once upstream results are put in fails (kind ``encode``)
instead of being sent again and again. Real nats-server and worker.
"""

from __future__ import annotations

from typing import Any

import pytest
from wf_app import echo

from ebind.app import App
from ebind.errors import InvalidArguments, StepFailed
from ebind.workflow import DAG, signal_ref


def _nest(depth: int) -> Any:
    x: Any = None
    for _ in range(depth):
        x = [x]
    return x


async def test_a_deeply_nested_signal_payload_is_refused_by_name(app: App) -> None:
    """A payload too deep to serialise raises InvalidArguments, not a bare RecursionError."""
    dag = DAG(id="deep-refused")
    dag.step("gated", echo, signal_ref("deep"))
    await dag.submit(app.workflow)
    with pytest.raises(InvalidArguments):
        await app.workflow.signal(dag.id, "deep", _nest(5000))


async def test_an_accepted_signal_payload_reaches_its_waiting_step(
    app: App, start_worker: Any
) -> None:
    """Whatever payload ``signal`` accepts (returns True) is usable by the waiting step.

    A payload deeper than ``SIGNAL_NESTING`` is refused by name: put into a step's
    arguments inside a task message it would be too deep for a worker (and far deeper
    ones could be stored but never read back). The deepest accepted payload runs.
    """
    from ebind.workflow.signals import SIGNAL_NESTING

    await start_worker("w1")
    dag = DAG(id="deep-accepted")
    gated = dag.step("gated", echo, signal_ref("deep"))
    await dag.submit(app.workflow)
    for depth in (1000, 985, 150, SIGNAL_NESTING + 1):
        with pytest.raises(InvalidArguments, match="nests deeper than"):
            await app.workflow.signal(dag.id, "deep", _nest(depth))
    assert await app.workflow.signal(dag.id, "deep", _nest(SIGNAL_NESTING)) is True
    got = await app.workflow.result(dag.id, gated, timeout=10)
    assert got == _nest(SIGNAL_NESTING)


# A worker refuses (dead-letters) every task message nesting JSON deeper than
# ebind.validate.MAX_NESTING (100) before it can even read which DAG step it is, so the
# step record is never told: it stays ``running``, the sweep finds the message gone and
# sends it again (and again), and ``result()`` / ``wait()`` never return.


async def test_a_step_whose_literal_arguments_nest_too_deep_is_refused_at_submit(
    app: App,
) -> None:
    dag = DAG(id="deep-args")
    with pytest.raises(InvalidArguments, match="nest deeper than 99 levels"):
        dag.step("a", echo, _nest(150))
        await dag.submit(app.workflow)


async def test_a_signal_payload_too_deep_for_a_task_message_does_not_hang_its_step(
    app: App, start_worker: Any
) -> None:
    await start_worker("w1")
    dag = DAG(id="deep-signal-150")
    gated = dag.step("gated", echo, signal_ref("x"))
    await dag.submit(app.workflow)
    with pytest.raises(InvalidArguments, match="could never be sent to a worker"):
        await app.workflow.signal(dag.id, "x", _nest(150))
    assert await app.workflow.signal(dag.id, "x", 7) is True  # the refusal delivered nothing
    assert await app.workflow.result(dag.id, gated, timeout=12) == 7


async def test_an_upstream_result_that_makes_a_dependent_too_deep_fails_the_dependent(
    app: App, start_worker: Any
) -> None:
    """Each message alone is shallow (60 and ~52 levels); only the resolved one is too deep."""
    await start_worker("w1")
    dag = DAG(id="deep-ref")
    a = dag.step("a", echo, _nest(60))
    wrapped: Any = a.ref()
    for _ in range(50):
        wrapped = [wrapped]
    b = dag.step("b", echo, wrapped)
    await dag.submit(app.workflow)
    assert await app.workflow.result(dag.id, a, timeout=10) == _nest(60)
    with pytest.raises(StepFailed, match="nest deeper than 99 levels") as failed:
        await app.workflow.result(dag.id, b, timeout=12)
    assert failed.value.error_kind == "encode"
