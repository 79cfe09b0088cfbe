"""``ebind task revoke ID`` through click's CliRunner against a real server."""

from __future__ import annotations

import asyncio
import json

from click.testing import CliRunner

from ebind.app import App
from ebind.cli import main
from ebind.revoke import revoke_key
from ebind.streams import KV_LEASES


async def _recorded(url: str, task_id: str) -> bool:
    async with App("cli-revoke", nats_url=url) as app:
        kv = await app.js.key_value(KV_LEASES)
        entry = await kv.get(revoke_key(task_id))
        return bool(entry.key == revoke_key(task_id))


def test_revoke_records_the_id_and_says_until_when(nats_url: str) -> None:
    runner = CliRunner()
    out = runner.invoke(main, ["--nats", nats_url, "task", "revoke", "job-1", "--yes"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("revoked job-1 (recorded until ")
    assert asyncio.run(_recorded(nats_url, "job-1"))
    as_json = runner.invoke(
        main, ["--nats", nats_url, "--json", "task", "revoke", "job-2", "--yes"]
    )
    assert as_json.exit_code == 0, as_json.output
    doc = json.loads(as_json.output)
    assert doc["task_id"] == "job-2" and doc["until"]


def test_a_malformed_id_is_one_error_line_naming_it(nats_url: str) -> None:
    out = CliRunner().invoke(main, ["--nats", nats_url, "task", "revoke", "a.b", "--yes"])
    assert out.exit_code == 1
    assert "invalid task id 'a.b'" in out.output
