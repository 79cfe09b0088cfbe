"""``ebind stream ...`` against a real node with ebind's streams."""

from __future__ import annotations

import json

from cli_helpers import Background, assert_clean_error, invoke

from ebind.queues import lane_durable


def test_ls_lists_ebind_streams(bg: Background) -> None:
    r = invoke(bg.url, "stream", "ls")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0].split() == [
        "NAME",
        "MSGS",
        "BYTES",
        "CONS",
        "FIRST",
        "LAST",
        "SUBJECTS",
        "RETENTION",
    ]
    names = {row["name"] for row in json.loads(invoke(bg.url, "stream", "ls", "--json").stdout)}
    assert {"EBIND_TASKS", "EBIND_RESP", "EBIND_DLQ", "EBIND_DAG_EVENTS"} <= names


def test_info_shows_consumers_with_pending_counts(bg: Background) -> None:
    doc = json.loads(invoke(bg.url, "stream", "info", "EBIND_TASKS", "--json").stdout)
    assert doc["name"] == "EBIND_TASKS" and doc["retention"] == "workq"
    lane = next(c for c in doc["consumer_info"] if c["name"] == lane_durable("add"))
    assert lane["num_pending"] == 0 and "num_ack_pending" in lane
    text = invoke(bg.url, "stream", "info", "EBIND_TASKS").stdout
    assert "ACK-PENDING" in text and lane_durable("add") in text


def test_peek_shows_last_messages_and_purge_empties(bg: Background) -> None:
    for i in range(3):
        bg.run(bg.app.js.publish("DLQ.cli.peek", f'{{"n": {i}, "pad": "{"x" * 80}"}}'.encode()))
    rows = json.loads(invoke(bg.url, "stream", "peek", "EBIND_DLQ", "--last", "2", "--json").stdout)
    assert [json.loads(r["data"])["n"] for r in rows] == [1, 2]
    assert rows[0]["subject"] == "DLQ.cli.peek"
    table = invoke(bg.url, "stream", "peek", "EBIND_DLQ", "--last", "2").stdout.splitlines()
    assert table[0].split() == ["SEQ", "AGE", "SUBJECT", "SIZE", "BODY"]
    assert table[2].endswith("…")  # bodies are truncated
    assert_clean_error(invoke(bg.url, "stream", "purge", "EBIND_DLQ"), "--yes")
    purged = invoke(bg.url, "stream", "purge", "EBIND_DLQ", "--subject", "DLQ.cli.peek", "--yes")
    assert purged.stdout.strip() == "purged 3 messages from EBIND_DLQ"


def test_unknown_stream_is_one_clear_line(bg: Background) -> None:
    for args in (("info",), ("peek",), ("purge", "--yes")):
        r = invoke(bg.url, "stream", *args, "NOPE")
        assert_clean_error(r, "stream 'NOPE' not found")
