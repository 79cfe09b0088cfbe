"""``ebind dlq ...`` against a real node: dead letters made by a worker running a failing task."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from cli_helpers import Background, assert_clean_error, invoke


def _dead_letter(bg: Background, n: int) -> int:
    """Enqueue ``explode(n)`` and wait until its dead letter is stored; returns its seq."""
    bg.run(bg.app.send("explode", n))
    for _ in range(200):
        letters = bg.run(bg.app.dlq.list())
        for letter in letters:
            if letter.task is not None and bytes(letter.task.payload) == f"[{n}]".encode():
                return letter.seq
        time.sleep(0.05)
    raise AssertionError("no dead letter appeared")


@pytest.fixture
def empty_dlq(bg: Background) -> Background:
    """The module's DLQ, purged."""
    bg.run(bg.app.dlq.purge())
    return bg


def test_ls_on_empty_dlq(empty_dlq: Background) -> None:
    r = invoke(empty_dlq.url, "dlq", "ls")
    assert r.exit_code == 0
    assert r.stdout.strip() == "DLQ is empty"
    assert json.loads(invoke(empty_dlq.url, "dlq", "ls", "--json").stdout) == []


def test_ls_show_requeue_purge(empty_dlq: Background) -> None:
    bg = empty_dlq
    seq = _dead_letter(bg, 7)
    table = invoke(bg.url, "dlq", "ls")
    header, row = table.stdout.splitlines()[:2]
    assert header.split() == ["SEQ", "FN", "ERROR", "ATTEMPT", "AGE", "TASK-ID"]
    assert row.split()[:2] == [str(seq), "explode"]
    assert "cannot handle 7" in row
    rows = json.loads(invoke(bg.url, "dlq", "ls", "--json").stdout)
    assert rows[0]["seq"] == seq and rows[0]["fn"] == "explode"

    shown = invoke(bg.url, "dlq", "show", str(seq))
    assert shown.stdout.splitlines()[0] == f"DLQ seq {seq}"
    assert "payload:" in shown.stdout and "[7]" in shown.stdout
    doc = json.loads(invoke(bg.url, "dlq", "show", str(seq), "--json").stdout)
    assert doc["error"]["message"].endswith("cannot handle 7")

    assert_clean_error(invoke(bg.url, "dlq", "requeue", str(seq)), "--yes")
    requeued = invoke(bg.url, "dlq", "requeue", str(seq), "--yes")
    assert requeued.stdout.startswith(f"requeued seq {seq} (task ")
    assert_clean_error(invoke(bg.url, "dlq", "show", str(seq)), f"no dead letter at sequence {seq}")

    _dead_letter(bg, 7)  # the requeued task fails again and comes back
    purged = invoke(bg.url, "dlq", "purge", "--yes", "--json")
    assert json.loads(purged.stdout)["purged"] >= 1
    assert invoke(bg.url, "dlq", "ls").stdout.strip() == "DLQ is empty"


def test_watch_prints_new_dead_letters_until_interrupted(empty_dlq: Background) -> None:
    bg = empty_dlq
    proc = subprocess.Popen(
        [sys.executable, "-m", "ebind", "--nats", bg.url, "dlq", "watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        # the subscription must exist before the dead letter is published: it says so
        assert proc.stderr is not None
        seen: list[str] = []
        while not any("watching for new dead letters" in line for line in seen):
            seen.append(proc.stderr.readline())  # (log lines may come first)
            assert seen[-1], f"dlq watch ended before it was ready: {seen}"
        _dead_letter(bg, 9)
        line = proc.stdout.readline() if proc.stdout else ""
        assert "fn=explode" in line and "cannot handle 9" in line
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: ends quietly
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def _count(bg: Background, name: str | None, want: int) -> None:
    for _ in range(200):
        if bg.run(bg.app.dlq.count(name)) == want:
            return
        time.sleep(0.05)
    raise AssertionError(f"DLQ count for {name!r} never reached {want}")


def test_requeue_all_optionally_by_task_and_leaves_junk_in_place(empty_dlq: Background) -> None:
    bg, url = empty_dlq, empty_dlq.url
    old = {_dead_letter(bg, 1), _dead_letter(bg, 2)}
    # sent to the worker, which has no handler for it: dead-lettered under "ghost"
    bg.run(bg.app.apply_async("ghost", (1,), target=bg.worker.worker_id, ignore_result=True))
    _count(bg, "ghost", 1)
    junk = bg.run(bg.app.js.publish("DLQ.junk", b"not an entry")).seq

    assert "give either one SEQ or --all" in invoke(url, "dlq", "requeue").output
    assert "give either one SEQ or --all" in invoke(url, "dlq", "requeue", "3", "--all").output
    assert "--fn only goes with --all" in invoke(url, "dlq", "requeue", "3", "--fn", "x").output
    wild = invoke(url, "dlq", "requeue", "--all", "--fn", "ex.*", "--yes")
    assert wild.exit_code == 2 and "invalid task name" in wild.output  # no wildcards
    assert_clean_error(invoke(url, "dlq", "requeue", "--all"), "--yes")  # no terminal

    done = invoke(url, "dlq", "requeue", "--all", "--fn", "explode", "--yes", "--json")
    report = json.loads(done.stdout)
    assert len(report["requeued"]) == 2 and report["skipped"] == []
    seqs = {letter.seq for letter in bg.run(bg.app.dlq.list())}
    assert not old & seqs  # the requeued entries are gone
    assert bg.run(bg.app.dlq.count("ghost")) == 1  # other tasks' entries untouched
    _count(bg, "explode", 2)  # the requeued tasks ran, failed again, and came back

    everything = invoke(url, "dlq", "requeue", "--all", "--yes")
    assert everything.stdout.splitlines()[0] == "requeued 3 dead letters"
    assert f"left 1 undecodable entries in place (seq {junk})" in everything.stdout
