"""`ebind worker --processes N`: N worker processes under one supervising parent."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from worker_helpers import ProcOutput, child_pids, read_ledger, spawn_cli_worker, wait_for

from ebind.app import App
from ebind.cli import main


def _started(path: Path) -> set[object]:
    return {e["pid"] for e in read_ledger(path) if e["phase"] == "start"}


async def test_children_share_the_work_and_sigterm_drains_all_of_them(
    nats_url: str, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """With -c 1 each, two blocked tasks need both children; SIGTERM lets both finish.

    The SIGTERM goes to every process at once, as systemd sends it to a whole unit: the
    children take the forwarded copy as the same request, not as "stop now".
    """
    import cli_app

    ledger, gate = tmp_path / "ledger.jsonl", tmp_path / "gate"
    sup = spawn_cli_worker(
        nats_url,
        ledger,
        "--processes",
        "2",
        "-c",
        "1",
        "--worker-id",
        "P",
        "--shutdown-grace",
        "20",
    )
    procs.append(sup)
    out = ProcOutput(sup)
    ready = out.wait("worker.ready", 2, 30)
    assert sorted(str(r["worker_id"]) for r in ready) == ["P-0", "P-1"]
    kids = child_pids(sup.pid)
    assert len(kids) == 2
    async with App("producer", nats_url=nats_url) as producer:
        producer.registry.register(cli_app.barrier.spec)
        futs = [await producer.enqueue("cli.barrier", str(gate)) for _ in range(2)]
        await wait_for(lambda: len(_started(ledger)) == 2, 20)
        assert _started(ledger) == set(kids)
        for pid in kids:  # as systemd does, besides the parent's forwarded copy
            os.kill(pid, signal.SIGTERM)
        # one at a time: two SIGTERMs pending at once would reach a child as one
        await wait_for(lambda: len(out.events("worker.stopping")) == 2, 10)
        sup.send_signal(signal.SIGTERM)
        await wait_for(lambda: len(out.events("worker.already_stopping")) == 2, 10)
        assert len(out.events("worker.stopping")) == 3  # the parent too
        assert sup.poll() is None  # draining: both tasks are still running
        gate.touch()
        assert sorted([await f.result(20) for f in futs]) == ["P-0", "P-1"]
    assert sup.wait(20) == 0
    assert all(_ended(pid) for pid in kids)


async def test_a_killed_child_is_restarted_and_a_killed_supervisor_drains_its_children(
    nats_url: str, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    import cli_app

    sup = spawn_cli_worker(nats_url, tmp_path / "ledger.jsonl", "--processes", "2")
    procs.append(sup)
    out = ProcOutput(sup)
    out.wait("worker.ready", 2, 30)
    first = child_pids(sup.pid)
    os.kill(first[0], signal.SIGKILL)
    out.wait("worker.ready", 3, 30)  # the replacement
    now = child_pids(sup.pid)
    assert len(now) == 2 and first[0] not in now and first[1] in now
    [died] = out.events("worker.process_died")
    assert died["how"] == "killed by SIGKILL" and died["pid"] == first[0]
    async with App("producer", nats_url=nats_url) as producer:
        producer.registry.register(cli_app.echo.spec)
        futs = [await producer.enqueue("cli.echo", i) for i in range(20)]
        assert [await f.result(20) for f in futs] == list(range(20))
    # The supervisor itself dies: each child notices and drains on its own.
    sup.kill()
    sup.wait(10)
    await wait_for(lambda: all(_ended(pid) for pid in now), 20)
    assert len(out.events("worker.supervisor_gone")) == 2
    assert len(out.events("worker.stopped")) == 2  # a graceful stop, not a kill


def test_a_child_refusing_its_command_line_ends_the_supervisor_with_exit_2(
    nats_url: str, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """A bad -A fails in every child the same way: no restart loop, exit 2 at once."""
    sup = spawn_cli_worker(
        nats_url, tmp_path / "ledger", "--processes", "2", app_path="no_such_module_xyz:app"
    )
    procs.append(sup)
    out, _ = sup.communicate(timeout=30)
    assert sup.returncode == 2
    assert b"cannot import module 'no_such_module_xyz'" in out
    assert b'"worker.process_gave_up"' in out
    assert b'"worker.process_died"' not in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pool-size", "2"], "--pool-size sizes the process pool: give --pool process"),
        (["--processes", "0"], "0 is not in the range x>=1"),
        (["--processes", "3", "--health-port", "65534"], "port 65534 + child 2 is past 65535"),
        (["--processes", "2", "--metrics-port", "65535"], "port 65535 + child 1 is past 65535"),
    ],
)
def test_process_flags_are_checked_before_anything_starts(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["worker", "-A", "no_such_module_xyz:app", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_the_old_process_pool_spelling_still_sizes_the_pool_with_a_warning() -> None:
    args = ["worker", "-A", "no_such_module_xyz:app", "--pool", "process", "--processes", "2"]
    result = CliRunner().invoke(main, args)
    assert "--processes with --pool process and no --pool-size" in result.output
    assert "use --pool-size N" in result.output
    # it went on to serve one worker (no supervisor): the App import is what failed
    assert "cannot import module 'no_such_module_xyz'" in result.output


async def test_embedded_with_processes_starts_one_server_for_all_children(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """--embedded: the supervisor owns the one server; the --nats URL is not used.

    Both children run the scheduler and the expiry sweeper, but each lease has one holder.
    A second signal to the supervisor stops its children at once, running tasks or not.
    """
    import cli_app

    ledger = tmp_path / "ledger.jsonl"
    args = ("--embedded", "--processes", "2")
    sup = spawn_cli_worker("nats://127.0.0.1:1", ledger, *args, scheduler=True)
    procs.append(sup)
    out = ProcOutput(sup)
    out.wait("worker.ready", 2, 30)
    prefix = b"embedded nats-server at "
    [server] = [line.removeprefix(prefix) for line in out.lines() if line.startswith(prefix)]

    def leases() -> list[str]:
        events = out.events("leader.acquired")
        return sorted(str(e["key"]) for e in events if e["logger"] == "ebind.workflow.leader")

    await wait_for(lambda: len(leases()) >= 2, 20)
    await asyncio.sleep(0.5)  # a second holder of either lease would show up by now
    assert leases() == ["expirer", "scheduler"]
    async with App("producer", nats_url=server.decode()) as producer:
        producer.registry.register(cli_app.hang.spec)
        await producer.enqueue("cli.hang")
        await wait_for(lambda: len(_started(ledger)) == 1, 20)
        sup.send_signal(signal.SIGTERM)
        await wait_for(lambda: len(out.events("worker.draining")) == 1, 10)
        sup.send_signal(signal.SIGTERM)
        assert out.exit_code() == 0, out.text()
    # the parent, then the child running the task (the idle one may be gone already)
    assert len(out.events("worker.stopping_now")) >= 2
    assert [e["phase"] for e in read_ledger(ledger)] == ["start"]


def test_the_environment_sets_the_process_count() -> None:
    args = ["worker", "-A", "no_such_module_xyz:app", "--health-port", "65535"]
    result = CliRunner().invoke(main, args, env={"EBIND_WORKER_PROCESSES": "2"})
    assert result.exit_code == 2, result.output
    assert "port 65535 + child 1 is past 65535" in result.output


def _ended(pid: int) -> bool:
    """Gone, or a zombie nobody reaps (the new parent may be a container's init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
