"""Configuration and connection surfaces against a hostile peer or a careless setting.

Buckets refuse rollup headers (one key's writer cannot purge them all), TLS settings make
TLS required before any credential is sent, an embedded cluster's routes authenticate,
settings errors never echo secrets, an empty file flag is refused, and a non-ASCII store
directory works. Each test takes a few seconds at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from click.testing import CliRunner
from pki_helpers import make_pki

from ebind.app import App
from ebind.cli import main
from ebind.connection import ENV, ConnectionSettings, nats_options, open_connection
from ebind.embed import Node, ServerAuth, server_binary, start_cluster, start_node
from ebind.errors import ConnectionFailed, InvalidArguments
from ebind.permissions import inbox_prefix_for
from ebind.streams import KV_DAGS, KV_LEASES

sys.path.insert(0, str(Path(__file__).parent))
import test_least_privilege as lp

pytestmark = pytest.mark.timeout(60)


# --- permissions: a key's writer cannot purge a whole KV bucket ------------------------


@pytest.fixture
def secured_node(tmp_path: Path) -> Iterator[Node]:
    """The least-privilege node of test_least_privilege: operator, worker, two producers."""
    node = start_node(store_dir=tmp_path / "store", extra_config=lp.users_config())
    try:
        yield node
    finally:
        node.shutdown()


@contextlib.asynccontextmanager
async def connected(node: Node, user: str) -> AsyncIterator[nats.NATS]:
    nc = await nats.connect(
        lp.url(node, user), inbox_prefix=inbox_prefix_for(user), max_reconnect_attempts=1
    )
    try:
        yield nc
    finally:
        await nc.close()


async def value_of(kv: object, key: str) -> bytes | None:
    """The key's value, or None when the bucket no longer has it."""
    try:
        return (await kv.get(key)).value  # type: ignore[attr-defined]
    except nats.js.errors.KeyNotFoundError:
        return None


async def test_a_plain_producer_cannot_wipe_the_leases_bucket(secured_node: Node) -> None:
    """A producer may write revocations (``$KV.ebind-leases.revoked.>``), nothing else there.

    NATS permissions look at the subject only, so a bucket that allowed rollup headers would
    let one publish to ``$KV.ebind-leases.revoked.<x>`` with ``Nats-Rollup: all`` purge the
    scheduler lease, every worker's liveness and concurrency-slot record, and every other
    revocation. ebind's buckets refuse rollup headers. The "intruder" user is a plain
    producer (no DAG rights, no countdown).
    """
    await lp.provision(secured_node)
    async with connected(secured_node, "operator") as ops:
        leases = await ops.jetstream().key_value(KV_LEASES)
        await leases.put("scheduler", b"w1")
        await leases.put("revoked.someone-elses-task", b"{}")
        async with connected(secured_node, "intruder") as prod:
            with contextlib.suppress(Exception):  # refused is the expected outcome
                await prod.jetstream().publish(
                    f"$KV.{KV_LEASES}.revoked.mine", b"", headers={"Nats-Rollup": "all"}
                )
        assert await value_of(leases, "scheduler") == b"w1"
        assert await value_of(leases, "revoked.someone-elses-task") == b"{}"


async def test_a_dag_producer_cannot_wipe_every_dag(secured_node: Node) -> None:
    """``dags=True`` documents "lets this user rewrite any DAG's records", not purge them all.

    With rollup headers allowed, one publish to a key of its own would wipe the whole
    ``ebind-dags`` bucket (every DAG of every user, results included); they are refused.
    """
    await lp.provision(secured_node)
    async with connected(secured_node, "operator") as ops:
        dags = await ops.jetstream().key_value(KV_DAGS)
        await dags.put("someone-elses-dag.meta", b"{}")
        async with connected(secured_node, "producer") as prod:
            with contextlib.suppress(Exception):
                await prod.jetstream().publish(
                    f"$KV.{KV_DAGS}.mine.meta", b"", headers={"Nats-Rollup": "all"}
                )
        assert await value_of(dags, "someone-elses-dag.meta") == b"{}"


# --- TLS settings require TLS --------------------------------------------------------------


@contextlib.asynccontextmanager
async def plaintext_server() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A listener that speaks NATS without TLS (say, an attacker on the path) and records
    the first line the client sends after the INFO (its CONNECT)."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        info = {"server_id": "MITM", "version": "2.15.1", "auth_required": True}
        writer.write(f"INFO {json.dumps(info)}\r\n".encode())
        await writer.drain()
        with contextlib.suppress(Exception):
            seen.append(await asyncio.wait_for(reader.readline(), 5))
        writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"tls://127.0.0.1:{port}", seen
    finally:
        srv.close()
        await srv.wait_closed()


async def test_tls_settings_never_send_credentials_in_plaintext(tmp_path: Path) -> None:
    """With ``--tls-ca`` (or a ``tls://`` URL) TLS is required before anything is sent.

    nats-py upgrades to TLS only when the server's INFO says ``tls_required``; a server (or
    anyone on the path) that leaves it out would get the CONNECT line in plaintext,
    password included. ebind's client refuses to send CONNECT over a plain connection when
    TLS was asked for: the connect fails, naming it, and no password leaves the process.
    """
    pki = make_pki(tmp_path / "pki")
    password = "s3cret-password-for-tls-only"
    settings = ConnectionSettings(user="alice", password=password, tls_ca=str(pki.ca))
    async with plaintext_server() as (url, seen):
        with pytest.raises(ConnectionFailed, match="secure connection required") as caught:
            await open_connection(
                [url],
                {**nats_options(settings), "connect_timeout": 2, "allow_reconnect": False},
                settings=settings,
            )
    assert password not in str(caught.value)
    assert password.encode() not in b"".join(seen), "the password went out in plaintext"


# --- ebind server --cluster --token: the routes take credentials of their own --------------


def _rogue_server(directory: Path, route_port: int) -> tuple[subprocess.Popen[bytes], int]:
    """A nats-server with no auth at all that routes to ``route_port``; its client port."""
    conf, log = directory / "rogue.conf", directory / "rogue.log"
    conf.write_text(
        'listen: "127.0.0.1:-1"\n'
        f'cluster {{\n  name: "ebind"\n  listen: "127.0.0.1:-1"\n'
        f'  routes: ["nats-route://127.0.0.1:{route_port}"]\n}}\n'
    )
    with log.open("wb") as out:
        proc = subprocess.Popen([server_binary(), "-c", str(conf)], stdout=out, stderr=out)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        m = re.search(r"client connections on \S+:(\d+)", log.read_text(errors="replace"))
        if m:
            return proc, int(m.group(1))
        time.sleep(0.05)
    proc.kill()
    proc.wait(5)
    raise AssertionError("the rogue server did not start")


async def test_a_cluster_token_cannot_be_bypassed_through_a_route(tmp_path: Path) -> None:
    """``ebind server --cluster N --token generate`` / ``start_cluster(auth=...)``.

    The token guards the client listeners; the routes need a secret of the cluster's own,
    so a local process that routes a server of its own into the cluster is refused, and a
    client of that rogue server (no token) reads nothing the token holders publish.
    """
    token = "the-cluster-token-1234567890"
    cluster = start_cluster(2, auth=ServerAuth(token=token), ready_timeout=15)
    proc = None
    try:
        route = cluster.nodes[0]._cluster.port  # also listed by /varz on the monitoring port
        proc, rogue_port = _rogue_server(tmp_path, route)
        spy = await nats.connect(f"nats://127.0.0.1:{rogue_port}", max_reconnect_attempts=1)
        got: list[bytes] = []
        try:
            sub = await spy.subscribe("TASKS.>")
            victim = await nats.connect(cluster.client_urls[1], token=token)
            try:
                for _ in range(20):  # until the rogue's interest has reached the cluster
                    await victim.publish("TASKS.billing.charge", b"card=4111...")
                    with contextlib.suppress(nats.errors.TimeoutError):
                        got.append((await sub.next_msg(timeout=0.2)).data)
                        break
            finally:
                await victim.close()
        finally:
            await spy.close()
        assert got == [], "a client without the token read a task published on the cluster"
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(5)
        cluster.shutdown()


# --- secrets in configuration errors ------------------------------------------------------


def test_a_list_of_urls_is_a_valid_setting_and_errors_never_show_a_password() -> None:
    """``EBIND_NATS_URL`` may be one URL or a list (the Django integration documents both);
    a value of the wrong form is refused naming the setting and the kind of value, never
    its text, which tracebacks, error pages and log handlers would show verbatim."""
    password = "pw-in-the-settings-url-31337"
    urls = [f"nats://alice:{password}@nats-1:4222", "nats://nats-2:4222"]
    app = App("settings-list")
    app.config_from_object({"EBIND_NATS_URL": urls})
    assert app.servers == urls
    for bad in ([f"nats://alice:{password}@h:4222", ""], password.encode(), []):
        with pytest.raises(InvalidArguments, match="EBIND_NATS_URL") as caught:
            App("settings-leak").config_from_object({"EBIND_NATS_URL": bad})
        assert password not in str(caught.value)
    with pytest.raises(InvalidArguments) as caught:
        App("settings-leak").config_from_object({"EBIND_NATS_PASSWORD": password.encode()})
    assert password not in str(caught.value)


# --- an empty --tls-ca is refused ---------------------------------------------------------


def test_an_empty_tls_ca_flag_is_refused_not_replaced_by_the_system_roots(
    tmp_path: Path,
) -> None:
    """``--tls-ca ""`` (say ``--tls-ca "$CA"`` with CA unset) is refused, naming the flag.

    Taken as "no CA", it would drop the CA pinned in the environment for the operating
    system's roots in silence. (An empty ``$EBIND_NATS_TLS_CA`` counts as unset.)
    """
    pki = make_pki(tmp_path / "pki")
    environ = dict.fromkeys(ENV.values())
    environ[ENV["tls_ca"]] = str(pki.ca)
    result = CliRunner().invoke(
        main, ["--nats", "nats://127.0.0.1:1", "--tls-ca", "", "stream", "ls"], env=environ
    )
    assert result.exit_code != 0
    # the same refusal a missing file gets, not an attempt to connect with the system roots
    assert "--tls-ca" in result.output, result.output


# --- the generated config holds a non-ASCII path ------------------------------------------


def test_a_store_dir_with_non_ascii_characters_starts(tmp_path: Path) -> None:
    """nats-server's config strings know no ``\\u`` escape, so the generated config writes
    non-ASCII text as UTF-8: ``start_node(store_dir="~/données")`` starts."""
    node = start_node(store_dir=tmp_path / "données")
    try:
        assert node.running
        assert (tmp_path / "données" / "jetstream").is_dir()
    finally:
        node.shutdown()
