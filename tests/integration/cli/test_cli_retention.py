"""Retention from the command line, and a purge of EBIND_TASKS that keeps what was not asked."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

import nats
from cli_helpers import Background, invoke

from ebind.streams import DLQ_STREAM, RESP_STREAM, TASKS_STREAM

REPO = Path(__file__).resolve().parents[3]


async def _max_ages(url: str) -> dict[str, float]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        return {
            n: float((await js.stream_info(n)).config.max_age)
            for n in (TASKS_STREAM, RESP_STREAM, DLQ_STREAM)
        }
    finally:
        await nc.close()


def test_purging_tasks_keeps_delayed_tasks_and_schedules_unless_asked(bg: Background) -> None:
    async def fill() -> None:
        for i in range(2):
            await bg.app.tasks["add"].apply_async((i, 1), target="a-claim-nobody-holds")
        await bg.app.tasks["add"].apply_async((1, 2), countdown=600)
        await bg.app.schedule("nightly-add", "add", [1, 2], every=3600)

    bg.run(fill())
    first = invoke(bg.url, "stream", "purge", TASKS_STREAM, "--yes")
    assert first.exit_code == 0, first.output
    assert first.stdout.strip() == (
        "purged 2 queued tasks from EBIND_TASKS (2 dead-lettered as purged, see `ebind dlq "
        "ls`); kept 1 delayed tasks (--delayed removes them), 1 periodic schedules "
        "(--schedules removes them)"
    )
    assert [e.entry.error.kind for e in bg.run(bg.app.dlq.list())] == ["purged", "purged"]
    assert [s.name for s in bg.run(bg.app.schedules())] == ["nightly-add"]
    second = invoke(bg.url, "stream", "purge", TASKS_STREAM, "--delayed", "--schedules", "--yes")
    assert second.exit_code == 0, second.output
    assert second.stdout.strip() == (
        "purged 0 queued tasks, 1 delayed tasks, 1 periodic schedules from EBIND_TASKS "
        "(1 dead-lettered as purged, see `ebind dlq ls`)"
    )
    assert bg.run(bg.app.dlq.count()) == 3  # the schedule is configuration: no dead letter
    assert bg.run(bg.app.schedules()) == []


def test_purge_json_reports_removed_and_kept(bg: Background) -> None:
    bg.run(bg.app.tasks["add"].apply_async((1, 1), target="a-claim-nobody-holds"))
    r = invoke(bg.url, "stream", "purge", TASKS_STREAM, "--yes", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {
        "stream": TASKS_STREAM,
        "removed": {"queued tasks": 1},
        "kept": {"delayed tasks": 0, "periodic schedules": 0, "running tasks": 0},
        "dead_lettered": 1,
    }


def test_delayed_and_schedules_flags_belong_to_the_tasks_stream(bg: Background) -> None:
    r = invoke(bg.url, "stream", "purge", DLQ_STREAM, "--delayed", "--yes")
    assert r.exit_code == 2 and "apply to EBIND_TASKS only" in r.output


def test_group_retention_options_create_the_streams_with_them(nats_url: str) -> None:
    r = invoke(
        nats_url,
        "--retention-tasks",
        "2h",
        "--retention-results",
        "30m",
        "--retention-dead-letters",
        "14d",
        "stream",
        "ls",
    )
    assert r.exit_code == 0, r.output
    assert asyncio.run(_max_ages(nats_url)) == {
        TASKS_STREAM: 2 * 3600 + 1800,
        RESP_STREAM: 1800,
        DLQ_STREAM: 14 * 86400,
    }


def test_a_bad_duration_is_one_clear_usage_error(nats_url: str) -> None:
    r = invoke(nats_url, "--retention-tasks", "fortnight", "stream", "ls")
    assert r.exit_code == 2
    assert "--retention-tasks: 'fortnight' is not a duration" in r.output
    assert "Traceback" not in r.output


def _line_starting(stream: IO[str], prefix: str) -> str:
    for line in stream:
        if line.startswith(prefix):
            return line.strip()
    raise AssertionError(f"no line starting with {prefix!r}")


def test_server_creates_the_streams_with_its_retention_options() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from ebind.cli.server import server; server()",
            "--port",
            "0",
            "--retention-tasks",
            "1h",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "EBIND_RETENTION_RESULTS": "2h"},
    )
    try:
        assert proc.stdout is not None
        described = _line_starting(proc.stdout, "retention: ")
        assert described == "retention: tasks 1h, results 2h, dead_letters 30d, dag_history 1w"
        url = _line_starting(proc.stdout, "nats-server ready: ").removeprefix("nats-server ready: ")
        assert asyncio.run(_max_ages(url)) == {
            TASKS_STREAM: 3600 + 900,
            RESP_STREAM: 7200,
            DLQ_STREAM: 30 * 86400,
        }
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    assert proc.returncode == 0
