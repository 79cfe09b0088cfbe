"""Every way to secure a cluster, on loopback: servers configured for user/password, token,
nkey, decentralised JWT (creds file), TLS with a CA, mutual TLS and TLS hostname checks.

For each mode a producer App and a worker complete a task, ``ebind stream ls`` works with
the flags and with the ``EBIND_NATS_*`` variables, and wrong credentials fail at once with
the typed error (library) or one ``Error:`` line (CLI), never with a reconnect loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from secured import MODES, Secured, cli, env, flags, make_app, options, running_worker, timed

from ebind.connection import ConnectionSettings
from ebind.errors import AuthenticationFailed, ConnectionFailed

FAIL_FAST = 3.0  # seconds; nats-py's own retry loop would take minutes


@pytest.fixture(params=sorted(MODES))
def secured(request: pytest.FixtureRequest, tmp_path: Path) -> Secured:
    """A server for one auth mode, shut down by PID after the test."""
    made = MODES[request.param](tmp_path)
    request.addfinalizer(made.node.shutdown)
    return made


async def _task_round_trip(url: str, good: ConnectionSettings) -> int:
    producer = make_app(url, "producer", **options(good))
    worker_app = make_app(url, "worker", **options(good))
    async with producer, worker_app, running_worker(worker_app):
        fut = await producer.enqueue("sec.add", 2, 3)
        return int(await fut.result(timeout=10))


def test_producer_and_worker_complete_a_task(secured: Secured) -> None:
    assert asyncio.run(_task_round_trip(secured.node.client_url, secured.good)) == 5


def test_app_reads_the_environment(secured: Secured, monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in env(secured.good).items():
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)
    assert asyncio.run(_task_round_trip(secured.node.client_url, ConnectionSettings())) == 5


def test_wrong_credentials_fail_fast_with_the_typed_error(secured: Secured) -> None:
    url = secured.node.client_url
    took, err = asyncio.run(timed(make_app(url, "bad", **options(secured.bad)).connect()))
    assert took < FAIL_FAST
    assert isinstance(err, ConnectionFailed)
    assert err.kind == secured.expect
    assert isinstance(err, AuthenticationFailed) is (secured.expect == "auth")
    assert url in str(err) and err.server == url
    if secured.expect == "auth":
        # One refusal in the server log: the client did not retry the same credentials.
        assert secured.node.log_tail(200).count("authentication error") == 1


def test_no_credentials_fail_fast(secured: Secured) -> None:
    url = secured.node.client_url
    took, err = asyncio.run(timed(make_app(url, "none").connect()))
    assert took < FAIL_FAST
    assert isinstance(err, ConnectionFailed) and err.kind == secured.expect


def test_cli_with_flags(secured: Secured) -> None:
    r = cli(secured.node.client_url, "stream", "ls", *flags(secured.good))
    assert r.exit_code == 0, r.stderr
    assert "EBIND_TASKS" in r.stdout


def test_cli_flags_before_the_command(secured: Secured) -> None:
    r = cli(secured.node.client_url, *flags(secured.good), "stream", "ls")
    assert r.exit_code == 0, r.stderr
    assert "EBIND_TASKS" in r.stdout


def test_cli_with_environment(secured: Secured) -> None:
    r = cli(secured.node.client_url, "stream", "ls", environ=env(secured.good))
    assert r.exit_code == 0, r.stderr
    assert "EBIND_TASKS" in r.stdout


def test_cli_wrong_credentials_print_one_line(secured: Secured) -> None:
    url = secured.node.client_url
    for result in (
        cli(url, "stream", "ls", *flags(secured.bad)),
        cli(url, "stream", "ls", environ=env(secured.bad)),
    ):
        assert result.exit_code == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("Error: ") and url in lines[0]
        assert "Traceback" not in result.output


def test_cli_flags_override_environment(secured: Secured) -> None:
    r = cli(
        secured.node.client_url,
        "stream",
        "ls",
        *flags(secured.good),
        environ=env(secured.bad),
    )
    assert r.exit_code == 0, r.stderr


def test_explicit_app_options_win_over_environment(
    secured: Secured, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var, value in env(secured.bad).items():
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)
    assert asyncio.run(_task_round_trip(secured.node.client_url, secured.good)) == 5
