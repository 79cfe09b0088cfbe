"""``ebind schedule ls|rm`` through click's CliRunner against a real server."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from click.testing import CliRunner

from ebind.app import App
from ebind.cli import main


async def _create(url: str) -> None:
    async with App("cli-sched", nats_url=url) as app:
        await app.schedule("hourly", "reports.send", ["ops"], every=timedelta(hours=1))
        await app.schedule("nine", "reports.daily", cron="0 9 * * mon-fri", tz="Europe/Paris")


def test_ls_json_lists_schedules_and_rm_removes_one(nats_url: str) -> None:
    asyncio.run(_create(nats_url))
    runner = CliRunner()
    out = runner.invoke(main, ["--nats", nats_url, "schedule", "ls", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert [r["name"] for r in rows] == ["hourly", "nine"]
    assert rows[0]["every_seconds"] == 3600.0 and rows[0]["task"] == "reports.send"
    assert rows[1]["cron"] == "0 9 * * mon-fri" and rows[1]["tz"] == "Europe/Paris"

    table = runner.invoke(main, ["--nats", nats_url, "schedule", "ls"])
    assert table.exit_code == 0, table.output
    assert "every 1h" in table.output and "cron 0 9 * * mon-fri (Europe/Paris)" in table.output

    rm = runner.invoke(main, ["--nats", nats_url, "schedule", "rm", "hourly", "--yes"])
    assert rm.exit_code == 0 and "removed schedule hourly" in rm.output
    again = runner.invoke(main, ["--nats", nats_url, "schedule", "rm", "hourly", "--yes"])
    assert again.exit_code == 1 and "no schedule named 'hourly'" in again.output
    left = runner.invoke(main, ["--nats", nats_url, "--json", "schedule", "ls"])
    assert [r["name"] for r in json.loads(left.output)] == ["nine"]


def test_ls_says_when_there_are_none(nats_url: str) -> None:
    out = CliRunner().invoke(main, ["--nats", nats_url, "schedule", "ls"])
    assert out.exit_code == 0 and "no schedules" in out.output


async def _create_sunday(url: str) -> list[str]:
    async with App("cli-sched-7", nats_url=url) as app:
        await app.schedule("sunday", "reports.weekly", cron="0 3 * * 7", tz="Europe/Berlin")
        await app.schedule("weekdays", "reports.daily", cron="30 6 * JAN-mar MON-FRI")
        raw = await app.js.get_last_msg("EBIND_TASKS", "TASKS_SCHEDULES.sunday")
        return [raw.headers["Nats-Schedule"], raw.headers["Ebind-Cron"]]


def test_sunday_as_seven_is_stored_for_the_server_and_listed_as_written(nats_url: str) -> None:
    sent, written = asyncio.run(_create_sunday(nats_url))
    assert sent == "0 0 3 * * 0"  # the server only knows 0 for Sunday
    assert written == "0 3 * * 7"
    out = CliRunner().invoke(main, ["--nats", nats_url, "--json", "schedule", "ls"])
    assert out.exit_code == 0, out.output
    rows = {r["name"]: r for r in json.loads(out.output)}
    assert rows["sunday"]["cron"] == "0 3 * * 7"
    assert rows["weekdays"]["cron"] == "30 6 * JAN-mar MON-FRI"
    table = CliRunner().invoke(main, ["--nats", nats_url, "schedule", "ls"])
    assert "cron 0 3 * * 7 (Europe/Berlin)" in table.output
