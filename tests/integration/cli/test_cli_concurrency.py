"""``ebind concurrency ls`` through click's CliRunner against a real server."""

from __future__ import annotations

import asyncio
import json
import time

import msgspec
from click.testing import CliRunner

from ebind.app import App
from ebind.cli import main
from ebind.limits.concurrency_rules import SlotLease, key_group, slot_key
from ebind.streams import KV_LEASES


async def _seed(url: str) -> None:
    now = time.time()
    lease = SlotLease(
        task_id="job-7",
        task_name="billing.charge",
        key="acme",
        worker_id="w-1",
        started_at=now - 3,
        expires_at=now + 27,
    )
    async with App("cli-conc", nats_url=url) as app:
        kv = await app.js.key_value(KV_LEASES)
        await kv.put(slot_key(key_group("billing.charge", "acme"), 1), msgspec.json.encode(lease))
        # claims another task's key: shown as invalid, as workers treat it as free
        await kv.put(slot_key(key_group("other", "x"), 0), msgspec.json.encode(lease))
        await kv.put(slot_key("0" * 32, 0), b"\xff junk")
        await kv.put("revoked.job-9", b"")  # not a slot: not listed


def test_ls_lists_held_slots_and_flags_bad_records(nats_url: str) -> None:
    runner = CliRunner()
    empty = runner.invoke(main, ["--nats", nats_url, "concurrency", "ls"])
    assert empty.exit_code == 0, empty.output
    assert empty.output.strip() == "no concurrency slots are held"
    asyncio.run(_seed(nats_url))
    out = runner.invoke(main, ["--nats", nats_url, "concurrency", "ls"])
    assert out.exit_code == 0, out.output
    lines = out.output.strip().splitlines()
    assert lines[0].split()[:3] == ["TASK", "KEY", "SLOT"]
    valid = next(line for line in lines if "billing.charge" in line)
    assert valid.split()[:5] == ["billing.charge", "acme", "1", "job-7", "w-1"]
    assert sum("(invalid record)" in line for line in lines) == 2
    as_json = runner.invoke(main, ["--nats", nats_url, "--json", "concurrency", "ls"])
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.output)
    assert len(rows) == 3
    good = next(r for r in rows if r["valid"])
    assert good["task_id"] == "job-7" and good["key"] == "acme" and good["slot"] == 1
    assert 0 < good["expires_in"] <= 27 and good["running_for"] >= 3
