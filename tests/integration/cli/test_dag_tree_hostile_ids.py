"""``dag tree`` shows a forged step id's control characters as ``?``, as ``dag get`` does."""

from __future__ import annotations

import uuid

import pytest
from cli_helpers import Background, invoke

from ebind.workflow.dag import DAG

pytestmark = pytest.mark.timeout(60)

PRE = "$KV.ebind-dags."
OSC = "\x1b]0;pwned\x07"


def test_dag_tree_does_not_pass_an_escape_sequence_from_a_forged_step_id(bg: Background) -> None:
    d = DAG(f"tree-{uuid.uuid4().hex[:8]}")
    d.step("a", "add", 1, 2)
    bg.submit(d)
    bg.wait_status(d.id, "done")
    hostile = f"x{OSC}"  # a step key any dags=True writer can publish (no check_id on listing)

    async def plant() -> None:
        rec, _ = await bg.app.workflow.store.get_step(d.id, "a")
        import msgspec

        forged = msgspec.structs.replace(rec, step_id=hostile, deps=[])
        await bg.app.js.publish(f"{PRE}{d.id}.step.{hostile}", msgspec.json.encode(forged))

    bg.run(plant())
    got = invoke(bg.url, "dag", "get", d.id)  # fixed: shown with '?'
    assert got.exit_code == 0, got.output
    assert "\x1b]" not in got.output
    r = invoke(bg.url, "dag", "tree", d.id)
    assert r.exit_code == 0, (r.output, r.exception)
    assert "\x1b]" not in r.output, repr(r.output)
