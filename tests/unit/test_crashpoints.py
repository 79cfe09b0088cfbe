import os
import subprocess
import sys

import pytest

from ebind import crashpoints
from ebind.crashpoints import ENV, POINTS, parse


def test_parse_arms_names_with_counts() -> None:
    assert parse("worker.after_handler") == {"worker.after_handler": 1}
    assert parse(" worker.after_handler@3 , step.after_result ") == {
        "worker.after_handler": 3,
        "step.after_result": 1,
    }
    assert parse("") == {}


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("nope", "unknown crash point 'nope'"),
        ("worker.after_handler@0", "whole number >= 1"),
        ("worker.after_handler@x", "whole number >= 1"),
        ("worker.after_handler@-2", "whole number >= 1"),
    ],
)
def test_parse_rejects_unknown_points_and_bad_counts(value: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse(value)


def test_every_point_says_what_a_crash_there_leaves() -> None:
    assert all(text and "." in name for name, text in POINTS.items())


def test_unarmed_points_do_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crashpoints, "_armed", None)
    crashpoints.crashpoint("worker.after_handler")
    monkeypatch.setattr(crashpoints, "_armed", {"step.after_result": 1})
    crashpoints.crashpoint("worker.after_handler")


def _run(point_env: str, calls: int) -> subprocess.CompletedProcess[str]:
    code = (
        "from ebind.crashpoints import crashpoint\n"
        f"for i in range({calls}):\n"
        "    crashpoint('worker.after_handler')\n"
        "    print('passed', i, flush=True)\n"
    )
    env = {**os.environ, ENV: point_env}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
    )


def test_an_armed_point_sigkills_the_process_on_the_nth_pass() -> None:
    got = _run("worker.after_handler@3", 5)
    assert got.returncode == -9
    assert got.stdout.split("\n")[:2] == ["passed 0", "passed 1"]
    assert "passed 2" not in got.stdout
    assert "crash point worker.after_handler reached" in got.stderr


def test_an_unknown_point_in_the_environment_fails_at_import() -> None:
    got = _run("worker.after_handlr", 1)
    assert got.returncode == 1 and "unknown crash point 'worker.after_handlr'" in got.stderr
