"""``ebind worker ls`` and ``ebind queue ls``: tables for people, JSON for scripts."""

from __future__ import annotations

import asyncio
import json

import msgspec
from click.testing import CliRunner, Result

from ebind.cli import main
from ebind.embed import Node
from ebind.inspection import WorkerRecord, worker_key, worker_rows
from ebind.streams import KV_LEASES
from tests.integration.queues.conftest import AppFactory
from tests.integration.worker.worker_helpers import running


async def _cli(url: str, *args: str) -> Result:
    # the CLI runs its own event loop: give it a thread
    result = await asyncio.to_thread(CliRunner().invoke, main, ["--nats", url, *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


async def test_worker_ls_lists_running_workers(service: AppFactory, nats_node_module: Node) -> None:
    url = nats_node_module.client_url
    async with service("ls") as app:

        @app.task(name="ls.job", queue="reports")
        async def job() -> None:
            return None

        async with running(app, worker_id="ls-w1", claims=["gpu"], concurrency=3):
            doc = json.loads((await _cli(url, "worker", "ls", "--json")).stdout)
            (row,) = [w for w in doc["workers"] if w["worker_id"] == "ls-w1"]
            table = (await _cli(url, "worker", "ls")).stdout
        assert row["queues"] == ["default", "reports"]
        assert "gpu" in row["claims"] and row["concurrency"] == 3
        assert row["in_flight"] == 0 and row["leader"] is False
        assert 0 <= row["heartbeat_age"] < 5
        header = table.splitlines()[0].split()
        assert header == [
            "ID", "QUEUES", "CLAIMS", "CONCURRENCY", "IN-FLIGHT", "LEADER", "HOST", "HEARTBEAT"
        ]  # fmt: skip
        line = next(x for x in table.splitlines() if x.startswith("ls-w1"))
        assert "default,reports" in line and "gpu" in line and " ago" in line
        # a stopped worker removes its record
        rows, _ = await worker_rows(app.js)
        assert "ls-w1" not in [r.worker_id for r in rows]


async def test_worker_ls_skips_unreadable_records(service: AppFactory) -> None:
    async with service("bad-rec") as app:
        good = WorkerRecord(worker_id="fine", queues=["default"], concurrency=2, at=1.0)
        forged = WorkerRecord(worker_id="elsewhere", at=1.0)  # not under its own key
        bad_queue = WorkerRecord(worker_id="badq", queues=["a.b"], at=1.0)
        writes = {
            worker_key("fine"): msgspec.json.encode(good),
            worker_key("imposter"): msgspec.json.encode(forged),
            worker_key("badq"): msgspec.json.encode(bad_queue),
            worker_key("junk"): b"\xff not json",
            worker_key("negative"): b'{"worker_id": "negative", "concurrency": -1}',
        }
        for key, data in writes.items():
            await app.js.publish(f"$KV.{KV_LEASES}.{key}", data, headers={"Nats-TTL": "10s"})
        rows, unreadable = await worker_rows(app.js, now=3.0)
        assert [(r.worker_id, r.heartbeat_age) for r in rows if r.worker_id == "fine"] == [
            ("fine", 2.0)
        ]
        assert not {"elsewhere", "badq", "negative"} & {r.worker_id for r in rows}
        assert unreadable == 4
        for key in writes:
            await app.js.publish(f"$KV.{KV_LEASES}.{key}", b"", headers={"KV-Operation": "DEL"})


async def test_queue_ls_shows_depth_age_and_consumers(
    service: AppFactory, nats_node_module: Node
) -> None:
    url = nats_node_module.client_url
    async with service("qls") as app:
        await app.apply_async("qls.nobody", (1,), queue="orphans", priority="high")
        await app.apply_async("qls.nobody", (2,), queue="orphans", priority="high")
        await asyncio.sleep(0.2)
        rows = json.loads((await _cli(url, "queue", "ls", "-Q", "orphans", "--json")).stdout)
        table = (await _cli(url, "queue", "ls", "-Q", "orphans")).stdout
    assert [(r["queue"], r["band"], r["task"], r["depth"], r["consumer"]) for r in rows] == [
        ("orphans", "high", "qls.nobody", 2, False)
    ]
    assert rows[0]["oldest_age"] >= 0.2
    lines = table.splitlines()
    assert lines[0].split() == [
        "QUEUE", "BAND", "TASK", "DEPTH", "OLDEST", "CONSUMER", "PULLS", "UNACKED"
    ]  # fmt: skip
    assert lines[1].split()[:4] == ["orphans", "high", "qls.nobody", "2"]
    assert "none" in lines[1]


async def test_send_puts_a_task_in_a_queue_and_band(
    service: AppFactory, nats_node_module: Node
) -> None:
    url = nats_node_module.client_url
    await _cli(url, "send", "snd.job", "[1]", "-Q", "sendq", "--priority", "low")
    rows = json.loads((await _cli(url, "queue", "ls", "-Q", "sendq", "--json")).stdout)
    assert [(r["band"], r["task"], r["depth"]) for r in rows] == [("low", "snd.job", 1)]
    bad = await asyncio.to_thread(
        CliRunner().invoke, main, ["--nats", url, "send", "snd.job", "-Q", "a.b"]
    )
    assert bad.exit_code == 1 and "invalid queue" in bad.stderr
