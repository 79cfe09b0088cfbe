"""``ebind send``, the exit status of ``dag watch --until-done``, and small CLI manners."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import click
import pytest
from cli_helpers import Background, assert_clean_error, invoke
from click.testing import CliRunner

from ebind.cli import main
from ebind.cli.output import style
from ebind.cli.send import parse_args
from ebind.cli.worker import module_hint
from ebind.workflow.dag import DAG


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class TestSend:
    def test_send_prints_the_task_id(self, bg: Background) -> None:
        r = invoke(bg.url, "send", "add", "[2, 3]")
        assert r.exit_code == 0, r.output
        task_id = r.stdout.strip()
        assert task_id and "\n" not in task_id and " " not in task_id

    def test_send_wait_prints_the_result(self, bg: Background) -> None:
        r = invoke(bg.url, "send", "add", "[2, 40]", "--wait", "--timeout", "20")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout) == 42

    def test_send_wait_json_gives_id_and_result(self, bg: Background) -> None:
        r = invoke(bg.url, "--json", "send", "total", "[[1, 2, 3]]", "--wait")
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert doc["result"] == 6 and doc["task_id"]

    def test_send_wait_on_a_failing_task_exits_one_with_the_error(self, bg: Background) -> None:
        r = invoke(bg.url, "send", "explode", "7", "--wait", "--timeout", "20")
        assert_clean_error(r, "explode", "cannot handle 7")

    def test_send_wait_timeout_is_one_clear_line(self, bg: Background) -> None:
        r = invoke(
            bg.url, "send", "add", "[1, 1]", "--wait", "--timeout", "0.5", "--target", "nobody"
        )
        assert r.exit_code == 1, r.output
        assert "Traceback" not in r.stderr and r.stderr.startswith("Error: ")

    def test_bad_json_args_are_a_usage_error_naming_the_problem(self, bg: Background) -> None:
        r = invoke(bg.url, "send", "add", "[1, 2")
        assert r.exit_code == 2
        assert "'[1, 2' is not JSON" in r.stderr and "JSON array" in r.stderr

    def test_a_bad_task_name_is_refused(self, bg: Background) -> None:
        r = invoke(bg.url, "send", "no spaces allowed", "[]")
        assert r.exit_code == 1 and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("text", "args"),
    [(None, []), ("[]", []), ('[1, "a"]', [1, "a"]), ("5", [5]), ('{"k": 1}', [{"k": 1}])],
)
def test_parse_args(text: str | None, args: list[object]) -> None:
    assert parse_args(text) == args


class TestWatchExitStatus:
    def test_watch_until_done_exits_one_for_a_failed_dag(self, bg: Background) -> None:
        d = DAG(_id("fails"))
        d.step("boom", "explode", 1)
        bg.submit(d)
        r = invoke(bg.url, "dag", "watch", d.id, "--until-done")
        assert r.exit_code == 1, r.output
        assert r.stdout.splitlines()[-1].endswith(f"DAG {d.id}  finished  failed")

    def test_watch_until_done_exits_one_for_a_canceled_dag(self, bg: Background) -> None:
        d = DAG(_id("stopped"))
        d.step("held", "add", 1, 1, wait_for_signals=["never"])
        bg.submit(d)
        bg.wait_status(d.id, "running")
        bg.later(0.3, bg.app.workflow.cancel(d.id))
        r = invoke(bg.url, "--json", "dag", "watch", d.id, "--until-done")
        assert r.exit_code == 1, r.output
        assert json.loads(r.stdout.splitlines()[-1])["finished"]["status"] == "canceled"

    def test_watch_until_done_exits_zero_for_a_done_dag(self, bg: Background) -> None:
        d = DAG(_id("fine"))
        d.step("a", "add", 1, 2)
        bg.submit(d)
        r = invoke(bg.url, "dag", "watch", d.id, "--until-done")
        assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    ("given", "module"),
    [
        ("tasks.py", "tasks"),
        ("./tasks.py", "tasks"),
        ("pkg/tasks.py", "pkg.tasks"),
        ("pkg/sub/tasks", "pkg.sub.tasks"),
        ("tasks", None),
        ("pkg.tasks", None),
    ],
)
def test_module_hint(given: str, module: str | None) -> None:
    assert module_hint(given) == module


def test_worker_with_a_file_path_suggests_the_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tasks.py").write_text("raise SystemExit('must not be imported')\n")
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["worker", "-A", "tasks.py"])
    assert r.exit_code == 2
    assert "try -A tasks:app" in r.stderr


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

        def write(self, text: str) -> int:
            return len(text)

    monkeypatch.setattr("sys.stdout", Tty())
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert style("x", fg="red") == click.style("x", fg="red")
    monkeypatch.setenv("NO_COLOR", "1")
    assert style("x", fg="red") == "x"
    monkeypatch.setenv("NO_COLOR", "")  # empty means unset, as the convention says
    assert style("x", fg="red") != "x"
