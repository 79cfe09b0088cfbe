"""The pure parts of `make bench-peers` (bench/peers/report.py): medians, rows, tables, markers."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"peers_{name}", ROOT / f"bench/peers/{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


report = _load("report")
run = _load("run")  # the driver; loading it starts nothing


def _row(key: str, sync: str = "default", kind: str = "tasks", **measured: Any) -> dict[str, Any]:
    base = {"key": key, "system": key.split("-")[0], "config": "cfg", "kind": kind, "sync": sync}
    return base | measured


def test_median_takes_each_field_over_the_repetitions_that_reported_it() -> None:
    reps = [
        {"tasks_per_s": 100.0, "p50_ms": None, "cpu_us_per_task": 30.0},
        {"tasks_per_s": 300.0, "p50_ms": None, "cpu_us_per_task": 10.0},
        {"tasks_per_s": 200.0, "p50_ms": None, "cpu_us_per_task": 20.0, "extra": "ignored"},
    ]
    got = report.median_of(reps)
    assert got == {"tasks_per_s": 200.0, "p50_ms": None, "cpu_us_per_task": 20.0}


def test_median_of_an_even_count_is_the_mean_of_the_middle_two() -> None:
    assert report.median_of([{"seconds": 1.0}, {"seconds": 3.0}]) == {"seconds": 2.0}


def test_json_line_is_one_line_with_rounded_floats() -> None:
    line = report.json_line(_row("ebind-loop", tasks_per_s=2913.456, p50_ms=0.98765, note="a\nb"))
    assert "\n" not in line
    back = json.loads(line)
    assert back["tasks_per_s"] == 2913.5
    assert back["p50_ms"] == 0.988
    assert back["note"] == "a\nb"


def test_task_table_renders_measured_skipped_and_failed_rows() -> None:
    rows = [
        _row(
            "ebind-loop",
            tasks_per_s=2913.4,
            p50_ms=0.991,
            cpu_us_per_task=197.2,
            server_cpu_us_per_task=None,
        ),
        _row("celery-solo", sync="—", skipped="redis-server not found"),
        _row("arq", sync="—", error="client exited 1"),
        _row("ebind-dag", kind="dag", seconds=1.2),
    ]
    lines = report.task_table(rows).splitlines()
    assert lines[0].startswith("| system |")
    assert len(lines) == 5  # header, rule, three task rows; the DAG row is not here
    assert "| 2,913 | 0.99 | 197 | — |" in lines[2]
    assert "skipped: redis-server not found" in lines[3]
    assert "failed: client exited 1" in lines[4]
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_a_long_failure_is_cut_short_in_the_table() -> None:
    table = report.task_table([_row("ebind-gather", error="PublishFailed: " + "x" * 500)])
    cell = table.splitlines()[2].split(" | ")[3]
    assert cell.startswith("failed: PublishFailed: xxx")
    assert cell.endswith("…")
    assert len(cell) == report.CELL


def test_dag_table_holds_only_the_dag_rows() -> None:
    rows = [
        _row("ebind-loop", tasks_per_s=1.0),
        _row(
            "ebind-dag", kind="dag", leaves=1000, seconds=1.15, submit_s=0.41, cpu_us_per_task=600.0
        ),
    ]
    lines = report.dag_table(rows).splitlines()
    assert len(lines) == 3
    assert "| 1000 | 0.410 | 1.150 | 600 |" in lines[2]


def test_headlines_state_the_ratios_the_targets_use() -> None:
    rows = [
        _row("floor-pipelined", tasks_per_s=18000.0, p50_ms=0.7, cpu_us_per_task=30.0),
        _row("floor-puback", tasks_per_s=4000.0, p50_ms=0.8, cpu_us_per_task=100.0),
        _row("ebind-loop", tasks_per_s=3800.0, p50_ms=0.88, cpu_us_per_task=60.0),
        _row("ebind-gather", tasks_per_s=9000.0, p50_ms=0.7, cpu_us_per_task=60.0),
        _row("ebind-dag", kind="dag", seconds=1.0),
        _row("celery-chord-solo", sync="—", kind="dag", seconds=6.0),
        _row("celery-chord-threads", sync="—", kind="dag", seconds=5.0),
    ]
    text = "\n".join(report.headlines(rows))
    assert "0.95 of the one-PubAck floor" in text
    assert "0.50 of the pipelined floor" in text
    assert "p50 is 1.10× the floor's" in text
    assert "2.00× the floor's" in text
    assert "5.0× as fast as Celery's fastest chord" in text
    assert "always" not in text  # no always rows, no always lines


def test_headlines_leave_out_failed_rows() -> None:
    rows = [
        _row("floor-puback", tasks_per_s=4000.0),
        _row("ebind-loop", error="timed out"),
    ]
    assert report.headlines(rows) == []


def test_render_says_how_the_run_was_made() -> None:
    meta = {
        "date": "2026-12-02 18:00 UTC",
        "machine": "2 cores",
        "reps": 3,
        "tasks": 10000,
        "latency": 200,
        "leaves": 1000,
        "load": "1.0 / 1.0 / 1.0",
    }
    text = report.render([_row("ebind-loop", tasks_per_s=1.0)], meta)
    assert text.startswith("Run 2026-12-02 18:00 UTC on 2 cores; 3 repetition(s)")
    assert "10,000 tasks" in text


def test_replace_block_swaps_only_what_stands_between_the_markers() -> None:
    page = f"# Perf\n\nbefore\n{report.BEGIN}\nold table\n{report.END}\nafter\n"
    out = report.replace_block(page, "new table\n\n")
    assert out == f"# Perf\n\nbefore\n{report.BEGIN}\nnew table\n{report.END}\nafter\n"
    assert report.replace_block(out, "new table") == out  # regenerating is stable


@pytest.mark.parametrize(
    "page",
    ["no markers at all", f"{report.END}\n{report.BEGIN}\n", f"only {report.BEGIN}\n"],
)
def test_replace_block_refuses_a_page_without_both_markers_in_order(page: str) -> None:
    with pytest.raises(ValueError, match="markers"):
        report.replace_block(page, "x")


def test_the_performance_page_carries_the_markers() -> None:
    text = (ROOT / "docs/performance.md").read_text()
    assert text.index(report.BEGIN) < text.index(report.END)
    assert "img/peers.png" in text


def test_labels_add_the_sync_setting_only_where_there_is_one() -> None:
    assert report.label(_row("ebind-loop")) == "ebind, delay() loop (default)"
    assert report.label(_row("arq", sync="—")) == "arq (5 ms polls)"
    assert report.label(_row("new-row", sync="—")) == "new-row"


def test_every_row_is_one_key_per_sync_setting_and_has_a_plot_label() -> None:
    rows = run.rows_for(["default", "always"])
    pairs = [(r.key, r.sync) for r in rows]
    assert len(pairs) == len(set(pairs))
    for r in rows:
        assert r.kind in ("tasks", "dag")
        assert r.broker in ("nats", "redis")
        assert r.kind == "dag" or r.key in report.LABELS
        assert (r.broker == "redis") == (r.sync == "—")
        assert all(cmd for cmd in r.workers)


def test_the_peers_run_only_once_and_the_floor_under_each_setting() -> None:
    keys = [r.key for r in run.rows_for(["default", "always"])]
    assert keys.count("celery-prefork") == 1
    assert keys.count("floor-puback") == 2
    assert "celery-prefork" not in [r.key for r in run.rows_for(["always"])]


def test_a_failed_client_is_summed_up_by_the_exception_it_ended_with(tmp_path: Path) -> None:
    log = tmp_path / "client.log"
    log.write_text(
        "Traceback (most recent call last):\n  File 'x.py', line 1\n    boom()\n"
        "ValueError: first\n\nThe above exception was the direct cause of the following"
        " exception:\n\nTraceback (most recent call last):\n  File 'y.py'\n"
        "PublishFailed: not confirmed within 5.0s\n"
    )
    assert run._tail(log, 1) == "PublishFailed: not confirmed within 5.0s"
    assert run._summary(log) == "PublishFailed: not confirmed within 5.0s (from ValueError: first)"
    assert "ValueError: first" in run._tail(log)
    assert run._tail(tmp_path / "missing.log") == ""


def test_a_single_exception_is_summed_up_alone(tmp_path: Path) -> None:
    log = tmp_path / "client.log"
    log.write_text("Traceback (most recent call last):\n  File 'x.py'\nKeyError: 'k'\n")
    assert run._summary(log) == "KeyError: 'k'"
    assert run._summary(tmp_path / "missing.log") == ""
