"""Operator CLI commands (worker/queue/stream/send/schedule/task/server), the worker's health
endpoint and the Prometheus metrics against hostile records and careless input: output
carries no escape sequence from records, bad input is one clear line, destructive commands
need --yes without a terminal, idle connections cannot lock the health probe out, and
producers cannot grow the metrics' label set without bound.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nats
import pytest
from click.testing import CliRunner, Result

sys.path.insert(0, str(Path(__file__).parent.parent / "integration" / "cli"))

from cli_helpers import Background, invoke, publish_raw

from ebind.app import App
from ebind.cli import main
from ebind.errors import NonRetryable
from ebind.inspection import worker_key
from ebind.streams import KV_LEASES

pytestmark = pytest.mark.timeout(60)

OSC = "\x1b]0;pwned\x07"  # sets the terminal title
CLEAR = "\x1b[2J"  # clears the screen
CONCEAL = "\x1b[8m"  # SGR 8: everything after it is invisible on the terminal


def on_terminal(url: str, *args: str) -> Result:
    """``ebind --nats url args`` with colour on, as on a terminal: click strips nothing."""
    return CliRunner().invoke(main, ["--nats", url, *args], color=True)


def _no_traceback(result: Result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )


# ------------------------------------------------------------------ stream peek --json
def test_stream_peek_json_with_a_non_ascii_header_value_is_valid_json(nats_node: Any) -> None:
    # A producer may put any UTF-8 in a header value. nats-py's get_msg parses the header
    # block with email's compat32 parser, which turns a non-ASCII value into an
    # email.header.Header object; echo_json cannot encode it and the command dies with a
    # TypeError traceback instead of printing JSON.
    url = nats_node.client_url
    publish_raw(url, "TASKS.add", b"{}", {"X-Note": "caf\u00e9"})
    result = invoke(url, "stream", "peek", "EBIND_TASKS", "--json")
    _no_traceback(result)
    assert result.exit_code == 0, (result.exit_code, result.stderr, repr(result.exception))
    rows = json.loads(result.stdout)
    assert "X-Note" in rows[-1]["headers"], rows


# ------------------------------------------------------------------ stream info
def test_stream_info_prints_no_escape_sequences_from_stream_subjects(nats_node: Any) -> None:
    # nats-server accepts control bytes in a stream's subjects. `stream ls` passes them
    # through printable(); `stream info` prints the subjects line raw.
    url = nats_node.client_url

    async def make() -> None:
        nc = await nats.connect(url)
        try:
            await nc.jetstream().add_stream(name="HOSTILE", subjects=[f"evil.{OSC}{CLEAR}"])
        finally:
            await nc.close()

    asyncio.run(make())
    result = on_terminal(url, "stream", "info", "HOSTILE")
    assert result.exit_code == 0, (result.output, repr(result.exception))
    assert "\x1b" not in result.output and "\x07" not in result.output, repr(result.output)


# ------------------------------------------------------------------ colour codes in records
@pytest.mark.parametrize("code", [CONCEAL, "\x1b[30m", "\x1b[2m"], ids=["conceal", "black", "dim"])
def test_worker_ls_prints_no_colour_codes_from_a_worker_record(nats_node: Any, code: str) -> None:
    # A record's colour code would reach the terminal: SGR 8 (conceal), or black text on a
    # dark terminal, in a worker's host hides the rest of the table, every later worker row
    # and the shell prompt. Only text ebind styled itself keeps its codes.
    url = nats_node.client_url
    now = time.time()
    record = {"worker_id": "w-sgr", "host": f"h{code}", "pid": 1, "at": now, "started_at": now}
    subject = f"$KV.{KV_LEASES}.{worker_key('w-sgr')}"
    publish_raw(url, subject, json.dumps(record).encode(), {"Nats-TTL": "60s"})
    result = on_terminal(url, "worker", "ls")
    assert result.exit_code == 0, (result.output, repr(result.exception))
    assert "w-sgr" in result.output
    # Styling is off (stdout is not a terminal), so every escape here came from the record.
    assert "\x1b" not in result.output, repr(result.output)


# ------------------------------------------------------------------ send --wait
def refuse(text: str) -> str:
    """Fail for good, quoting the argument (as many real handlers' messages do)."""
    raise NonRetryable(f"cannot handle {text}")


def test_send_wait_prints_no_escape_sequences_from_a_failed_tasks_error(nats_node: Any) -> None:
    # The error of a failed task is text a handler built, often from the producer's
    # arguments; `send --wait` puts it on stderr verbatim (click strips only CSI codes, and
    # only off a terminal), so a task argument can retitle or clear the operator's terminal.
    url = nats_node.client_url
    bg = Background(url)
    bg.app.task(name="refuse")(refuse)
    bg.start()
    try:
        args = json.dumps([f"{OSC}{CLEAR}"])
        result = on_terminal(url, "send", "refuse", args, "--wait", "--timeout", "15")
    finally:
        bg.stop()
    assert result.exit_code == 1, (result.output, repr(result.exception))
    assert "cannot handle" in result.stderr, result.stderr
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr, repr(result.stderr)


def test_send_with_deeply_nested_args_is_a_clear_error_not_a_traceback() -> None:
    # json.loads raises RecursionError (not JSONDecodeError) on deep nesting; parse_args
    # catches only the latter, so the command dies with a traceback before connecting.
    deep = "[" * 100_000 + "]" * 100_000
    result = CliRunner().invoke(main, ["--nats", "nats://127.0.0.1:1", "send", "add", deep])
    _no_traceback(result)
    assert result.exit_code in (1, 2), result.exit_code
    assert "ARGS" in result.output or "nest" in result.output, result.output[-300:]


# ------------------------------------------------------------------ server --store-dir
def test_server_with_an_unusable_store_dir_is_a_clear_error(tmp_path: Path) -> None:
    # --store-dir under a regular file: Node.__init__'s mkdir raises NotADirectoryError,
    # which `ebind server` lets through as a traceback.
    a_file = tmp_path / "file"
    a_file.write_text("x")
    result = CliRunner().invoke(main, ["server", "--port", "0", "--store-dir", str(a_file / "s")])
    _no_traceback(result)
    assert result.exit_code in (1, 2), result.exit_code
    assert str(a_file / "s") in result.output, result.output


# ------------------------------------------------------------------ schedule rm / task revoke
def test_schedule_rm_needs_yes_without_a_terminal(nats_node: Any) -> None:
    # The CLI's convention: destructive commands ask, and refuse without --yes when stdin
    # is not a terminal. `schedule rm` removes a periodic schedule (which exists only on
    # the server) at once, with neither.
    url = nats_node.client_url

    async def plant() -> None:
        async with App("sched", nats_url=url) as app:
            await app.schedule("nightly", "add", [1, 2], every=3600)

    asyncio.run(plant())
    result = invoke(url, "schedule", "rm", "nightly")  # CliRunner: stdin is not a TTY
    listed = invoke(url, "schedule", "ls", "--json")
    assert [s["name"] for s in json.loads(listed.stdout)] == ["nightly"], "removed unasked"
    assert result.exit_code == 1 and "--yes" in result.stderr, (result.exit_code, result.output)


def test_task_revoke_needs_yes_without_a_terminal(nats_node: Any) -> None:
    # `task revoke` cancels a running task and stops a queued one for the whole tasks
    # horizon, with no way back; `dag cancel` (its DAG counterpart) asks first and needs
    # --yes without a terminal, `task revoke` does neither.
    result = invoke(nats_node.client_url, "task", "revoke", "t-review-1")
    assert result.exit_code == 1 and "--yes" in result.stderr, (result.exit_code, result.output)


# ------------------------------------------------------------------ health endpoint
async def test_idle_connections_do_not_starve_the_health_probe() -> None:
    # A client keeps 64 half-open requests (renewed every 5 s). A newcomer evicts the
    # oldest of them, so the orchestrator's liveness probe is still answered.
    from ebind.worker.health import MAX_CONNECTIONS, StallTracker, serve_health

    # A worker that is up and consuming, as the endpoint reads it.
    state: dict[str, Any] = dict.fromkeys(("is_running", "is_consuming"), True)
    state |= {"is_stopping": False, "app": None, "unavailable_consumers": ()}
    state |= {"stuck_threads": 0, "concurrency": 1, "worker_id": "w-health"}
    worker: Any = SimpleNamespace(**state, loop_stalls=StallTracker())
    endpoint = await serve_health(worker, port=0)
    idle: list[asyncio.StreamWriter] = []
    try:
        for _ in range(MAX_CONNECTIONS):
            _, w = await asyncio.open_connection("127.0.0.1", endpoint.port)
            w.write(b"GET /livez HTTP/1.1\r\n")  # and never the blank line
            idle.append(w)
        await asyncio.sleep(0.5)
        reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
        try:
            writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 3.0)
        except ConnectionError as exc:
            status = f"<connection dropped: {exc!r}>".encode()
        finally:
            writer.close()
        assert status.startswith(b"HTTP/1.1 200"), f"probe answered {status!r}"
    finally:
        for w in idle:
            w.close()
        await endpoint.close()


# ------------------------------------------------------------------ metrics cardinality
async def test_queue_depth_labels_are_bounded_whatever_queues_producers_invent(
    app: App, attacker: Any
) -> None:
    # ebind_queue_depth{queue,band} gets one series per band for every queue name found on
    # the stream's subjects; a producer chooses queue names freely (TASKQ.<queue>.<band>.<t>),
    # so N invented queues become 3*N series in every worker's scrape.
    from prometheus_client import CollectorRegistry, generate_latest

    from ebind.contrib.prometheus import PrometheusMetrics

    n = 300
    for i in range(n):
        await attacker.publish(f"TASKQ.q{i}.normal.add", b'{"id":"x","name":"add"}')
    reg = CollectorRegistry()
    metrics = PrometheusMetrics(reg, app=app)
    try:
        await metrics.refresh_queues()
        text = generate_latest(reg).decode()
    finally:
        metrics.close()
    queues = set(re.findall(r'^ebind_queue_depth\{[^}]*queue="([^"]*)"', text, re.M))
    assert len(queues) < n, f"{len(queues)} queue label values from producer-chosen names"
