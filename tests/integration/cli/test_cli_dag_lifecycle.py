"""``ebind dag retry`` / ``gc`` / ``rm`` of a running DAG, through CliRunner on a real node."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from cli_helpers import Background, assert_clean_error, invoke

from ebind.workflow.dag import DAG
from ebind.workflow.types import DAGMeta, DAGStatus


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _failed(bg: Background) -> str:
    d = DAG(_id("boom"))
    bad = d.step("bad", "explode", 1)
    d.step("after", "add", bad.ref(), 1)
    bg.submit(d)
    bg.wait_status(d.id, "failed")
    return d.id


def test_retry_reruns_the_failed_steps(bg: Background) -> None:
    dag_id = _failed(bg)
    before, _ = bg.run(bg.app.workflow.store.get_step(dag_id, "bad"))
    r = invoke(bg.url, "dag", "retry", dag_id, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {
        "dag_id": dag_id,
        "result": "retrying",
        "steps": ["bad", "after"],
    }
    bg.wait_status(dag_id, "failed")  # explode fails again, as it always does
    after, _ = bg.run(bg.app.workflow.store.get_step(dag_id, "bad"))
    assert after.generation != before.generation and after.finished_at != before.finished_at


def test_retry_of_one_step_and_refusals(bg: Background) -> None:
    dag_id = _failed(bg)
    r = invoke(bg.url, "dag", "retry", dag_id, "--step", "after")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == f"retrying 1 step(s) of {dag_id}: after"
    bg.wait_status(dag_id, "failed")
    assert_clean_error(invoke(bg.url, "dag", "retry", dag_id, "--step", "nope"), "'nope'")
    done = DAG(_id("fine"))
    done.step("a", "add", 1, 1)
    bg.submit(done)
    bg.wait_status(done.id, "done")
    assert_clean_error(invoke(bg.url, "dag", "retry", done.id), "no failed step")


def test_rm_of_a_running_dag_cancels_and_deletes_it(bg: Background) -> None:
    d = DAG(_id("live"))
    d.step("wait", "add", 1, 1, wait_for_signals=["go"])
    bg.submit(d)
    r = invoke(bg.url, "dag", "rm", d.id, "--yes")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == f"deleted {d.id}"
    assert_clean_error(invoke(bg.url, "dag", "get", d.id), "not found")


async def _old_history(bg: Background, n: int) -> list[str]:
    store = bg.app.workflow.store
    ids = [_id("old") for _ in range(n)]
    long_ago = datetime.now(UTC) - timedelta(days=45)
    for dag_id in ids:
        meta = DAGMeta(id=dag_id, status=DAGStatus.DONE, created_at=long_ago, finished_at=long_ago)
        await store.put_meta(dag_id, meta, 0)
    return ids


def test_gc_removes_old_finished_dags_only_and_needs_yes(bg: Background) -> None:
    old = bg.run(_old_history(bg, 3))
    recent = _failed(bg)
    assert_clean_error(
        invoke(bg.url, "dag", "gc", "--older-than", "30d"), "--yes", "not a terminal"
    )
    dry = invoke(bg.url, "dag", "gc", "--older-than", "30d", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert set(old) <= set(json.loads(dry.stdout)["removed"])
    assert invoke(bg.url, "dag", "get", old[0]).exit_code == 0  # a dry run removes nothing
    r = invoke(bg.url, "dag", "gc", "--older-than", "30d", "--yes", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert set(old) <= set(out["removed"]) and recent not in out["removed"]
    assert out["older_than_seconds"] == 30 * 86400 and out["dry_run"] is False
    for dag_id in old:
        assert_clean_error(invoke(bg.url, "dag", "get", dag_id), "not found")
    assert invoke(bg.url, "dag", "get", recent).exit_code == 0
    text = invoke(bg.url, "dag", "gc", "--older-than", "30d", "--yes")
    assert text.stdout.startswith("removed 0 of ")


def test_gc_rejects_a_bad_age(bg: Background) -> None:
    r = invoke(bg.url, "dag", "gc", "--older-than", "soon", "--yes")
    assert r.exit_code == 2
    assert "'soon' is not a duration" in r.output


def test_dlq_requeue_of_a_dag_step_retries_it_through_its_dag(bg: Background) -> None:
    dag_id = _failed(bg)
    letters = bg.run(bg.app.dlq.list(limit=1000))
    seq = next(d.seq for d in letters if d.task is not None and d.task.dag_id == dag_id)
    before, _ = bg.run(bg.app.workflow.store.get_step(dag_id, "bad"))
    r = invoke(bg.url, "dlq", "requeue", str(seq), "--yes")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == f"requeued seq {seq} (task {dag_id}:bad)"
    assert_clean_error(invoke(bg.url, "dlq", "show", str(seq)), str(seq))
    bg.wait_status(dag_id, "failed")  # it ran again, and explode failed again
    after, _ = bg.run(bg.app.workflow.store.get_step(dag_id, "bad"))
    assert after.generation != before.generation
