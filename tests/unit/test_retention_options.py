"""The pure parts of the retention options and of the EBIND_TASKS purge report."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from ebind.cli.retention import (
    FIELDS,
    describe,
    merged,
    merged_values,
    retention_options,
    retention_values,
)
from ebind.cli.tasks_purge import PurgeReport, plan, render
from ebind.retention import Retention


@click.command()
@retention_options
def show(**retention: float | None) -> None:
    click.echo(repr(sorted(retention_values(retention).items())))


def test_every_field_has_an_option_and_an_env_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert list(FIELDS) == list(Retention.__struct_fields__)
    monkeypatch.setenv("EBIND_RETENTION_DAG_HISTORY", "2w")
    r = CliRunner().invoke(show, ["--retention-tasks", "1d12h", "--retention-results", "90"])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == repr(
        [("dag_history", 14 * 86400.0), ("results", 90.0), ("tasks", 129600.0)]
    )


def test_no_option_and_no_env_gives_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in FIELDS:
        monkeypatch.delenv(f"EBIND_RETENTION_{name.upper()}", raising=False)
    assert CliRunner().invoke(show, []).output.strip() == "[]"


def test_a_bad_duration_names_the_option() -> None:
    r = CliRunner().invoke(show, ["--retention-dead-letters", "3 days"])
    assert r.exit_code == 2
    assert "--retention-dead-letters: '3 days' is not a duration" in r.output


def test_merged_applies_layers_in_order_and_validates() -> None:
    base = Retention(tasks=100)
    assert merged(base) is base
    got = merged(base, {"tasks": 10.0, "results": 20.0}, {"tasks": 30.0})
    assert (got.tasks, got.results, got.dead_letters) == (30.0, 20.0, base.dead_letters)
    assert merged_values({"a": 1.0}, {"a": 2.0, "b": 3.0}) == {"a": 2.0, "b": 3.0}
    with pytest.raises(click.BadParameter, match=r"Retention\.tasks must be a number of seconds"):
        merged(base, {"tasks": 0.5})


def test_describe_uses_whole_units() -> None:
    assert describe(Retention()) == "tasks 1w, results 1d, dead_letters 30d, dag_history 1w"
    assert describe(Retention(tasks=90, results=1.5, dead_letters=7200, dag_history=60)) == (
        "tasks 90s, results 1.5s, dead_letters 2h, dag_history 1m"
    )


@pytest.mark.parametrize(
    ("delayed", "schedules", "remove", "keep"),
    [
        (False, False, ["queued tasks"], ["delayed tasks", "periodic schedules"]),
        (True, False, ["queued tasks", "delayed tasks"], ["periodic schedules"]),
        (False, True, ["queued tasks", "periodic schedules"], ["delayed tasks"]),
        (True, True, ["queued tasks", "delayed tasks", "periodic schedules"], []),
    ],
)
def test_purge_plan(delayed: bool, schedules: bool, remove: list[str], keep: list[str]) -> None:
    assert plan(delayed=delayed, schedules=schedules) == (remove, keep)


def test_purge_report_says_what_was_removed_and_how_to_remove_the_rest() -> None:
    report = PurgeReport(
        removed={"queued tasks": 4}, kept={"periodic schedules": 2}, dead_lettered=4
    )
    assert render(report) == (
        "purged 4 queued tasks from EBIND_TASKS (4 dead-lettered as purged, see `ebind dlq "
        "ls`); kept 2 periodic schedules (--schedules removes them)"
    )
    assert (
        render(PurgeReport(removed={"queued tasks": 0})) == "purged 0 queued tasks from EBIND_TASKS"
    )
    assert report.as_json() == {
        "stream": "EBIND_TASKS",
        "removed": {"queued tasks": 4},
        "kept": {"periodic schedules": 2},
        "dead_lettered": 4,
    }
