"""``ebind dag ...`` through CliRunner against a real node, worker and scheduler."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from cli_helpers import Background, assert_clean_error, invoke

from ebind.workflow.dag import DAG


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def diamond(bg: Background) -> str:
    """A finished diamond DAG: a -> (b, c) -> d, labelled."""
    d = DAG(_id("diamond"), labels=["cli-test", "diamond"])
    a = d.step("a", "add", 1, 2)
    b = d.step("b", "add", a.ref(), 10)
    c = d.step("c", "add", a.ref(), 20)
    d.step("d", "total", [b.ref(), c.ref()])
    bg.submit(d)
    assert bg.wait_done(d.id, "d") == 36
    bg.wait_status(d.id, "done")
    return d.id


@pytest.fixture
def gated(bg: Background) -> str:
    """A running DAG: ``wait`` waits on signal ``go``, ``last`` stops at breakpoint ``review``."""
    d = DAG(_id("gated"), labels=["cli-test", "gated"])
    first = d.step("first", "add", 1, 1)
    w = d.step("wait", "add", first.ref(), 1, wait_for_signals=["go"])
    d.step("last", "add", w.ref(), 1, break_before="review")
    bg.submit(d, active_breakpoints=("review",))
    bg.wait_done(d.id, "first")
    return d.id


class TestList:
    def test_ls_table_shows_status_counts_and_labels(self, bg: Background, diamond: str) -> None:
        r = invoke(bg.url, "dag", "ls", "--label", "diamond")
        assert r.exit_code == 0, r.output
        header, row = r.stdout.splitlines()[:2]
        assert header.split() == ["ID", "STATUS", "STEPS", "LABELS", "AGE"]
        assert row.startswith(diamond)
        assert "done" in row
        assert "4 (✓4 ✗0 ▶0 ⋯0 ⊘0 ■0)" in row
        assert "cli-test, diamond" in row

    def test_ls_json_global_and_per_command_agree(self, bg: Background, diamond: str) -> None:
        per_cmd = invoke(bg.url, "dag", "ls", "--label", "diamond", "--json")
        global_ = invoke(bg.url, "--json", "dag", "ls", "--label", "diamond")
        assert per_cmd.exit_code == global_.exit_code == 0
        rows = json.loads(per_cmd.stdout)
        assert json.loads(global_.stdout)[0]["id"] == rows[0]["id"] == diamond
        assert rows[0]["status"] == "done"
        assert rows[0]["steps"]["done"] == rows[0]["steps"]["total"] == 4
        assert rows[0]["labels"] == ["cli-test", "diamond"]

    def test_ls_filters_by_status_and_signal_badge(
        self, bg: Background, diamond: str, gated: str
    ) -> None:
        running = json.loads(invoke(bg.url, "dag", "ls", "--status", "running", "--json").stdout)
        assert gated in [r["id"] for r in running]
        assert diamond not in [r["id"] for r in running]
        waiting = invoke(bg.url, "dag", "ls", "--sig-waiting", "--label", "gated")
        assert gated in waiting.stdout
        assert "⚑1" in waiting.stdout

    def test_ls_since_keeps_only_recent_dags(self, bg: Background, diamond: str) -> None:
        created = bg.run(bg.app.workflow.info(diamond))[0].created_at
        assert created is not None
        recent = json.loads(invoke(bg.url, "dag", "ls", "--since", "1h", "--json").stdout)
        assert diamond in [r["id"] for r in recent]
        later = (created + timedelta(microseconds=1)).isoformat()
        newer = json.loads(invoke(bg.url, "dag", "ls", "--since", later, "--json").stdout)
        assert diamond not in [r["id"] for r in newer]
        bad = invoke(bg.url, "dag", "ls", "--since", "yesterday")
        assert bad.exit_code == 2 and "neither a duration" in bad.stderr

    def test_ls_rejects_unknown_status(self, bg: Background) -> None:
        r = invoke(bg.url, "dag", "ls", "--status", "sleeping")
        assert r.exit_code == 2
        assert "unknown status 'sleeping'" in r.stderr


class TestInspect:
    def test_get_prints_the_debug_report(self, bg: Background, diamond: str) -> None:
        r = invoke(bg.url, "dag", "get", diamond)
        assert r.exit_code == 0, r.output
        lines = r.stdout.splitlines()
        assert lines[0].startswith(f"DAG {diamond}  [DONE]")
        assert "  steps: 4 done, 0 failed" in lines[1]
        assert any(line.strip().startswith("✓  d") for line in lines)
        assert "  blockers: none" in lines

    def test_get_json_holds_meta_and_steps(self, bg: Background, diamond: str) -> None:
        doc = json.loads(invoke(bg.url, "dag", "get", diamond, "--json").stdout)
        assert doc["meta"]["id"] == diamond
        assert [s["record"]["step_id"] for s in doc["steps"]] == ["a", "b", "c", "d"]
        assert doc["counts"] == {"done": 4}

    def test_tree_draws_shared_child_under_each_parent(self, bg: Background, diamond: str) -> None:
        r = invoke(bg.url, "dag", "tree", diamond)
        assert r.exit_code == 0, r.output
        assert r.stdout.splitlines() == [
            f"DAG {diamond} [done]",
            "✓ a [done]",
            "├─ ✓ b [done]",
            "│  └─ ✓ d [done]",
            "└─ ✓ c [done]",
            "   └─ ✓ d [done]  ↑ see b",
        ]

    def test_tree_json_lists_edges(self, bg: Background, diamond: str) -> None:
        doc = json.loads(invoke(bg.url, "dag", "tree", diamond, "--json").stdout)
        assert doc["dag"]["id"] == diamond
        by_id = {s["id"]: s for s in doc["steps"]}
        assert by_id["d"]["deps"] == ["b", "c"]

    def test_step_get_and_result(self, bg: Background, diamond: str) -> None:
        text = invoke(bg.url, "dag", "step", "get", diamond, "b")
        assert text.exit_code == 0, text.output
        assert text.stdout.startswith(f"Step {diamond}/b  [done]  attempt=1")
        assert "fn:" in text.stdout and "add" in text.stdout
        doc = json.loads(invoke(bg.url, "dag", "step", "get", diamond, "b", "--json").stdout)
        assert doc["status"] == "done" and doc["revision"] > 0
        result = invoke(bg.url, "dag", "step", "result", diamond, "d")
        assert result.exit_code == 0
        assert json.loads(result.stdout) == 36

    def test_step_result_of_skipped_step_says_why(self, bg: Background) -> None:
        d = DAG(_id("broken"))
        boom = d.step("boom", "explode", 1)
        d.step("after", "add", boom.ref(), 1)
        bg.submit(d)
        bg.wait_status(d.id, "failed")
        assert_clean_error(
            invoke(bg.url, "dag", "step", "result", d.id, "after"), "step was skipped"
        )
        assert_clean_error(
            invoke(bg.url, "dag", "step", "result", d.id, "boom"), "step failed", "cannot handle 1"
        )

    def test_unknown_dag_is_one_clear_line(self, bg: Background) -> None:
        for args in (("get", "nope"), ("tree", "nope"), ("step", "get", "nope", "a")):
            assert_clean_error(invoke(bg.url, "dag", *args), "DAG 'nope' not found", "ebind dag ls")

    def test_unknown_step_is_one_clear_line(self, bg: Background, diamond: str) -> None:
        assert_clean_error(invoke(bg.url, "dag", "step", "get", diamond, "zz"), "'zz' not found")


class TestSignalsAndBreakpoints:
    def test_signal_ls_send_duplicate_and_watch_until_done(
        self, bg: Background, gated: str
    ) -> None:
        ls = invoke(bg.url, "dag", "signal", "ls", gated)
        assert ls.stdout.splitlines()[1].split() == ["go", "no", "-", "wait", "-"]
        sent = invoke(bg.url, "dag", "signal", gated, "go", '{"by": "ann"}')
        assert sent.stdout.strip() == f'delivered signal "go" to {gated}'
        again = invoke(bg.url, "dag", "signal", gated, "go", "2", "--json")
        assert json.loads(again.stdout) == {"dag_id": gated, "name": "go", "delivered": False}
        dup = invoke(bg.url, "dag", "signal", gated, "go", "3")
        assert dup.stdout.startswith("duplicate:")
        bg.wait_status(gated, "running")
        listed = json.loads(invoke(bg.url, "dag", "signal", "ls", gated, "--json").stdout)
        assert listed[0]["name"] == "go" and listed[0]["payload"] == {"by": "ann"}

    def test_signal_payload_must_be_json(self, bg: Background, gated: str) -> None:
        r = invoke(bg.url, "dag", "signal", gated, "go", "not json")
        assert r.exit_code == 2
        assert "payload is not valid JSON" in r.stderr

    def test_breakpoint_ls_resume_and_watch(self, bg: Background, gated: str) -> None:
        invoke(bg.url, "dag", "signal", gated, "go")
        bg.wait_done(gated, "wait")
        # `last` now stops before its breakpoint; a later bp resume lets the DAG finish
        # while `watch --until-done` is following it.
        rows = []
        for _ in range(50):
            rows = json.loads(invoke(bg.url, "dag", "bp", "ls", gated, "--json").stdout)
            if rows and rows[0]["state"] == "blocked":
                break
        assert rows[0]["step_id"] == "last" and rows[0]["armed"] is True
        table = invoke(bg.url, "dag", "bp", "ls", gated)
        assert table.stdout.splitlines()[1].split()[:5] == [
            "last",
            "before",
            "review",
            "yes",
            "blocked",
        ]
        assert "⦿1" in invoke(bg.url, "dag", "ls", "--label", "gated").stdout

        bg.later(0.5, bg.app.workflow.resume_breakpoint(gated, "review"))
        watch = invoke(bg.url, "dag", "watch", gated, "--until-done")
        assert watch.exit_code == 0, watch.output
        assert "step last  bp_resumed" in watch.stdout
        assert "step last  completed  status=done" in watch.stdout
        assert watch.stdout.splitlines()[-1].endswith(f"DAG {gated}  finished  done")

    def test_bp_resume_reports_count(self, bg: Background, diamond: str) -> None:
        r = invoke(bg.url, "dag", "bp", "resume", diamond, "review", "--json")
        assert json.loads(r.stdout) == {"dag_id": diamond, "label": "review", "released": 0}

    def test_watch_json_lines_on_a_finished_dag(self, bg: Background, diamond: str) -> None:
        r = invoke(bg.url, "--json", "dag", "watch", diamond, "--until-done")
        assert r.exit_code == 0, r.output
        last = json.loads(r.stdout.splitlines()[-1])
        assert last["finished"] == {"dag_id": diamond, "status": "done"}

    def test_watch_needs_a_dag_or_all(self, bg: Background) -> None:
        assert invoke(bg.url, "dag", "watch").exit_code == 2
        assert invoke(bg.url, "dag", "watch", "--all", "--until-done").exit_code == 2


class TestControl:
    def test_pause_resume_cancel_rm(self, bg: Background, gated: str) -> None:
        paused = invoke(bg.url, "dag", "pause", gated)
        assert paused.exit_code == 0, paused.output
        assert paused.stdout.strip() in (f"paused {gated}", f"pausing {gated}")
        bg.wait_status(gated, "paused")
        assert invoke(bg.url, "dag", "resume", gated).stdout.strip() == f"resumed {gated}"
        assert_clean_error(invoke(bg.url, "dag", "cancel", gated), "--yes", "not a terminal")
        canceled = invoke(bg.url, "dag", "cancel", gated, "--yes", "--json")
        assert json.loads(canceled.stdout) == {"dag_id": gated, "result": "canceled"}
        assert invoke(bg.url, "dag", "rm", gated, "--yes").stdout.strip() == f"deleted {gated}"
        assert_clean_error(invoke(bg.url, "dag", "get", gated), "not found")

    def test_pause_of_finished_dag_names_status(self, bg: Background, diamond: str) -> None:
        assert_clean_error(invoke(bg.url, "dag", "pause", diamond), diamond, "done")

    def test_rm_finished_only_refuses_running(self, bg: Background, gated: str) -> None:
        assert_clean_error(
            invoke(bg.url, "dag", "rm", gated, "--finished-only", "--yes"), "refusing to rm"
        )

    def test_confirmation_prompt_on_a_terminal(
        self, bg: Background, gated: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("ebind.cli.output._interactive", lambda: True)
        no = invoke(bg.url, "dag", "cancel", gated, input="n\n")
        assert no.exit_code == 1
        assert no.stderr.endswith("Error: aborted\n")
        yes = invoke(bg.url, "dag", "cancel", gated, input="y\n")
        assert yes.exit_code == 0, yes.output
        assert f"Cancel DAG {gated}?" in yes.stderr
        assert yes.stdout.strip() == f"canceled {gated}"
