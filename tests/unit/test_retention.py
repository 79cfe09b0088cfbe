import pytest

import ebind
from ebind.errors import InvalidArguments
from ebind.retention import Retention, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("30s", 30.0),
        ("15m", 900.0),
        ("12h", 43200.0),
        ("7d", 604800.0),
        ("2w", 1209600.0),
        ("1d12h", 129600.0),
        ("1.5h", 5400.0),
        (" 5m ", 300.0),
    ],
)
def test_parse_duration_accepts(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "h", "1d 2h", "-5s", "1H", "12h3", "d1"])
def test_parse_duration_rejects_with_a_clear_error(text: str) -> None:
    with pytest.raises(InvalidArguments, match="is not a duration"):
        parse_duration(text, what="--retention-tasks")


def test_defaults_keep_a_queued_task_a_week() -> None:
    r = Retention()
    assert r.tasks == 7 * 86400 and r.results == 86400
    assert r.dead_letters == 30 * 86400 and r.dag_history == 7 * 86400


def test_from_env_overrides_only_what_is_set() -> None:
    r = Retention.from_env({"EBIND_RETENTION_TASKS": "14d", "EBIND_RETENTION_RESULTS": ""})
    assert r.tasks == 14 * 86400 and r.results == Retention().results


def test_from_env_names_the_variable_on_bad_input() -> None:
    with pytest.raises(InvalidArguments, match="EBIND_RETENTION_DEAD_LETTERS"):
        Retention.from_env({"EBIND_RETENTION_DEAD_LETTERS": "forever"})


@pytest.mark.parametrize("value", [0, 0.5, -1, float("inf"), float("nan"), True, "7d"])
def test_rejects_non_positive_or_non_numeric(value: object) -> None:
    with pytest.raises(InvalidArguments, match="Retention"):
        Retention(tasks=value)  # type: ignore[arg-type]


def test_app_takes_retention_and_refuses_other_types(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ebind.App("a", retention=Retention(tasks=3600)).retention.tasks == 3600
    monkeypatch.setenv("EBIND_RETENTION_TASKS", "2d")
    assert ebind.App("a").retention.tasks == 2 * 86400
    with pytest.raises(InvalidArguments, match=r"ebind\.Retention"):
        ebind.App("a", retention={"tasks": 5})  # type: ignore[arg-type]
