"""A run that uses a password full of hostile characters leaks it nowhere.

The worker runs as ``ebind worker`` (credentials from the environment, debug JSON logs), a
producer in this process (logs through ``ebind.logging.configure``), a task that
dead-letters, and CLI commands: ``stream ls``, ``stream info``, ``dlq ls``/``show``, a wrong
password, an unreachable server (with the password in the URL and in the environment) and a
URL the password breaks. Every stdout, stderr, log line and DLQ entry is grepped for the
password in each form it could take.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import msgspec
import pytest
import structlog
from secured import HOSTILE_PASSWORD, make_app

from ebind.embed import Node, ServerAuth, start_node
from ebind.errors import ConnectionFailed, EbindError, InvalidArguments, TaskFailed
from ebind.logging import configure

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
# A password that is valid inside a URL, for the cases that put it there.
URL_PASSWORD = "UrlSafeSecret-4711-xyzzy"


def _forms(secret: str) -> set[str]:
    """Every spelling of ``secret`` that would count as a leak, and the tell-tale remainder
    a URL pattern cutting at the first ``@`` would leave."""
    return {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
        quote(secret, safe=""),
        quote(secret),
        secret.partition("@")[2],
    } - {""}


WINDOW = 8  # any run this long of a secret's spelling counts: a partial leak is a leak


def _fragments(secret: str) -> set[str]:
    return {
        form[i : i + WINDOW] for form in _forms(secret) for i in range(len(form) - WINDOW + 1)
    } | {f for f in _forms(secret) if len(f) < WINDOW}


FRAGMENTS = _fragments(HOSTILE_PASSWORD) | _fragments(URL_PASSWORD)


def _leaks(text: str) -> list[str]:
    return sorted(f for f in FRAGMENTS if f in text)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Node]:
    """A server with user alice (the hostile password) and bob (the URL-safe one)."""
    auth = ServerAuth(users=(("alice", HOSTILE_PASSWORD), ("bob", URL_PASSWORD)))
    node = start_node(store_dir=tmp_path / "store", auth=auth)
    try:
        yield node
    finally:
        node.shutdown()


def _env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("EBIND_NATS_")}
    return {
        **base,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


ALICE = {"EBIND_NATS_USER": "alice", "EBIND_NATS_PASSWORD": HOSTILE_PASSWORD}


def _ebind(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ebind", "--log-level", "debug", *args],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _start_worker(url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "ebind", "worker", "-A", "leak_app:app", "--nats", url),
                *("--no-scheduler", "--log-format", "json", "--log-level", "debug"),
                *("--ack-wait", "2", "--shutdown-grace", "2"),
            ],
            cwd=HERE,
            env=_env(**ALICE),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if b" ready" in log.read_bytes():
            return
        if proc.poll() is not None:
            raise AssertionError(f"worker exited {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"worker not ready:\n{log.read_text()}")


async def _produce(url: str) -> list[str]:
    """Enqueue a task that succeeds and one that dead-letters; return the DLQ as JSON."""
    app = make_app(url, "leak-producer", user="alice", password=HOSTILE_PASSWORD)
    async with app:
        assert await (await app.enqueue("sec.add", 20, 22)).result(timeout=15) == 42
        fut = await app.enqueue("sec.fail", "no reason")
        with pytest.raises(TaskFailed):
            await fut.result(timeout=15)
        letters = await app.dlq.list(100)
        assert letters, "the failing task should be in the dead-letter queue"
        return [msgspec.json.encode(letter).decode() for letter in letters]


async def _refused(url: str, **options: object) -> str:
    app = make_app(url, "leak-bad", **options)
    try:
        await app.connect()
    except EbindError as exc:
        return f"{type(exc).__name__}: {exc}"
    await app.close()
    raise AssertionError("connect should have failed")


def test_secret_never_leaks(server: Node, tmp_path: Path) -> None:
    url = server.client_url
    captured: dict[str, str] = {}
    worker_log = tmp_path / "worker.log"
    worker = _start_worker(url, worker_log)
    stream = io.StringIO()
    saved = sys.stderr
    sys.stderr = stream  # configure() binds the stream it finds, as an entry point would
    try:
        configure(format="json", level="debug")
        _wait_ready(worker, worker_log)
        captured["dlq entries"] = "\n".join(asyncio.run(_produce(url)))
        wrong = asyncio.run(_refused(url, user="alice", password=HOSTILE_PASSWORD + "!"))
        assert wrong.startswith("AuthenticationFailed")
        captured["library wrong password"] = wrong
        down = asyncio.run(
            _refused(
                f"nats://bob:{URL_PASSWORD}@127.0.0.1:1",
                connect_timeout=1,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
            )
        )
        assert down.startswith("ConnectionFailed") and "127.0.0.1:1" in down
        captured["library unreachable"] = down
        broken = asyncio.run(_refused(f"nats://alice:{HOSTILE_PASSWORD}@127.0.0.1:{server.port}"))
        assert broken.startswith("InvalidArguments")
        captured["library broken url"] = broken
    finally:
        sys.stderr = saved
        structlog.reset_defaults()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(20)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
    captured["producer logs"] = stream.getvalue()
    captured["worker output"] = worker_log.read_text()
    assert "task.dead_lettered" in captured["worker output"] or "dead" in captured["worker output"]

    runs = {
        "stream ls": _ebind("--nats", url, "stream", "ls", env=_env(**ALICE)),
        "stream info": _ebind("--nats", url, "stream", "info", "EBIND_DLQ", env=_env(**ALICE)),
        "stream info json": _ebind(
            "--nats", url, "--json", "stream", "info", "EBIND_TASKS", env=_env(**ALICE)
        ),
        "dlq ls": _ebind("--nats", url, "dlq", "ls", env=_env(**ALICE)),
        "dlq ls json": _ebind("--nats", url, "--json", "dlq", "ls", env=_env(**ALICE)),
        "password flag": _ebind(
            "--nats",
            url,
            "stream",
            "ls",
            "--user",
            "alice",
            "--password",
            HOSTILE_PASSWORD,
            env=_env(),
        ),
        "wrong password": _ebind(
            "--nats",
            url,
            "stream",
            "ls",
            env=_env(EBIND_NATS_USER="alice", EBIND_NATS_PASSWORD=HOSTILE_PASSWORD + "!"),
        ),
        "unreachable, password in env": _ebind(
            "--nats", "nats://127.0.0.1:1", "stream", "ls", env=_env(**ALICE)
        ),
        "unreachable, password in url": _ebind(
            "--nats", f"nats://bob:{URL_PASSWORD}@127.0.0.1:1", "dlq", "ls", env=_env()
        ),
        "password breaks the url": _ebind(
            "--nats",
            f"nats://alice:{HOSTILE_PASSWORD}@127.0.0.1:{server.port}",
            "stream",
            "ls",
            env=_env(),
        ),
    }
    for name, run in runs.items():
        captured[f"{name} stdout"] = run.stdout
        captured[f"{name} stderr"] = run.stderr
    leaked = {name: _leaks(text) for name, text in captured.items() if _leaks(text)}
    assert leaked == {}, f"secret found in: {sorted(leaked)}"
    for name in ("stream ls", "stream info", "dlq ls", "password flag"):
        assert runs[name].returncode == 0, runs[name].stderr
    assert "EBIND_DLQ" in runs["stream info"].stdout
    assert "sec.fail" in runs["dlq ls"].stdout
    for name in (
        "wrong password",
        "unreachable, password in env",
        "unreachable, password in url",
        "password breaks the url",
    ):
        # --log-level debug adds JSON log lines; the error itself is one plain line.
        lines = runs[name].stderr.strip().splitlines()
        err = [line for line in lines if not line.startswith("{")]
        assert runs[name].returncode == 1 and len(err) == 1, runs[name].stderr
        assert err[0].startswith("Error: ")
    assert "refused the credentials" in runs["wrong password"].stderr
    assert "bob:***@127.0.0.1:1" in runs["unreachable, password in url"].stderr

    assert sum(len(t) for t in captured.values()) > 2000  # the run really said things


def test_invalid_settings_never_echo_the_secret(tmp_path: Path) -> None:
    seed = tmp_path / "seed.nk"
    seed.write_text(f"SA{HOSTILE_PASSWORD}\n")  # an account seed where a user seed belongs
    from ebind.connection import ConnectionSettings, nats_options

    for settings in (
        ConnectionSettings(password=HOSTILE_PASSWORD),
        ConnectionSettings(token=HOSTILE_PASSWORD, user="u", password=HOSTILE_PASSWORD),
        ConnectionSettings(nkey=str(seed)),
    ):
        with pytest.raises(InvalidArguments) as err:
            nats_options(settings)
        assert _leaks(str(err.value)) == []
        assert _leaks(repr(settings)) == []
    assert isinstance(ConnectionFailed("x"), OSError)
