"""Shared pieces of the secured-cluster tests: servers per auth mode, an App pair, the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import nkeys
from click.testing import CliRunner, Result
from pki_helpers import make_decentralised, make_pki, new_keypair

from ebind.app import App
from ebind.cli import main
from ebind.connection import ENV, FLAGS, ConnectionSettings, nats_options
from ebind.embed import Node, ServerAuth, start_node
from ebind.worker import Worker

HOSTILE_PASSWORD = "p@ss:w/o#rd%20 sp äé€ 密码 'q\"&?=,;"
"""A password holding every character that breaks naive URL handling."""
TOKEN = "tok@en/with:odd#chars% and spaces ü"


@dataclass
class Secured:
    """A running server for one auth mode with settings that pass and settings that fail."""

    node: Node
    good: ConnectionSettings
    bad: ConnectionSettings
    expect: str  # "auth" or "tls": what the bad settings must fail with


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def start_userpass(tmp: Path) -> Secured:
    """Users with passwords; the password holds hostile characters."""
    node = start_node(
        store_dir=tmp / "store", auth=ServerAuth(users=(("alice", HOSTILE_PASSWORD),))
    )
    good = ConnectionSettings(user="alice", password=HOSTILE_PASSWORD)
    bad = ConnectionSettings(user="alice", password=HOSTILE_PASSWORD + "x")
    return Secured(node, good, bad, "auth")


def start_token(tmp: Path) -> Secured:
    """A shared token."""
    node = start_node(store_dir=tmp / "store", auth=ServerAuth(token=TOKEN))
    return Secured(
        node, ConnectionSettings(token=TOKEN), ConnectionSettings(token="wrong-token"), "auth"
    )


def start_nkey(tmp: Path) -> Secured:
    """A user nkey; the client holds the seed in a file."""
    seed, user = new_keypair(nkeys.PREFIX_BYTE_USER)
    other, _ = new_keypair(nkeys.PREFIX_BYTE_USER)
    node = start_node(store_dir=tmp / "store", auth=ServerAuth(nkeys=(user.public_key.decode(),)))
    good = ConnectionSettings(nkey=_write(tmp / "user.nk", seed.decode() + "\n"))
    bad = ConnectionSettings(nkey=_write(tmp / "other.nk", other.decode() + "\n"))
    return Secured(node, good, bad, "auth")


def start_creds(tmp: Path) -> Secured:
    """Decentralised JWT auth: operator, memory resolver, preloaded accounts, creds files."""
    setup = make_decentralised(tmp / "jwt")
    node = start_node(store_dir=tmp / "store", extra_config=setup.server_config)
    good = ConnectionSettings(creds=str(setup.creds))
    return Secured(node, good, ConnectionSettings(creds=str(setup.stranger_creds)), "auth")


def start_tls(tmp: Path) -> Secured:
    """Server TLS verified against a CA made in the test."""
    pki = make_pki(tmp / "pki")
    auth = ServerAuth(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key))
    node = start_node(store_dir=tmp / "store", auth=auth)
    good = ConnectionSettings(tls_ca=str(pki.ca))
    return Secured(node, good, ConnectionSettings(tls_ca=str(pki.other_ca)), "tls")


def start_mtls(tmp: Path) -> Secured:
    """Mutual TLS: the server demands a client certificate from its CA."""
    pki = make_pki(tmp / "pki")
    auth = ServerAuth(
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        tls_ca=str(pki.ca),
        tls_verify=True,
    )
    node = start_node(store_dir=tmp / "store", auth=auth)
    good = ConnectionSettings(
        tls_ca=str(pki.ca), tls_cert=str(pki.client_cert), tls_key=str(pki.client_key)
    )
    bad = ConnectionSettings(
        tls_ca=str(pki.ca),
        tls_cert=str(pki.other_client_cert),
        tls_key=str(pki.other_client_key),
    )
    return Secured(node, good, bad, "tls")


def start_tls_hostname(tmp: Path) -> Secured:
    """A server certificate for a DNS name only: the client must be told the name to verify."""
    pki = make_pki(tmp / "pki", server_names=("nats.ebind.test",), with_ip=False)
    auth = ServerAuth(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key))
    node = start_node(store_dir=tmp / "store", auth=auth)
    good = ConnectionSettings(tls_ca=str(pki.ca), tls_hostname="nats.ebind.test")
    bad = ConnectionSettings(tls_ca=str(pki.ca), tls_hostname="other.ebind.test")
    return Secured(node, good, bad, "tls")


MODES: dict[str, Callable[[Path], Secured]] = {
    "userpass": start_userpass,
    "token": start_token,
    "nkey": start_nkey,
    "creds": start_creds,
    "tls": start_tls,
    "mtls": start_mtls,
    "tls_hostname": start_tls_hostname,
}


def make_app(url: str, name: str, **options: Any) -> App:
    """An App with the ``sec.add`` task registered."""
    app = App(name, nats_url=url, **options)

    @app.task(name="sec.add")
    async def add(a: int, b: int) -> int:
        return a + b

    return app


@contextlib.asynccontextmanager
async def running_worker(app: App) -> AsyncIterator[Worker]:
    """A connected worker for the block, stopped afterwards (bounded)."""
    w = Worker(app, scheduler=False, ack_wait=2.0, shutdown_grace=2.0, concurrency=4)
    task = asyncio.create_task(w.run())
    try:
        await asyncio.wait_for(w.wait_ready(), 10)
        yield w
    finally:
        await w.stop()
        await asyncio.wait_for(task, 10)


def flags(settings: ConnectionSettings) -> list[str]:
    """The CLI flags that express ``settings``."""
    out: list[str] = []
    for f in fields(settings):
        value = getattr(settings, f.name)
        if value is not None:
            out += [FLAGS[f.name], value]
    return out


def env(settings: ConnectionSettings) -> dict[str, str | None]:
    """The ``EBIND_NATS_*`` variables that express ``settings`` (the others cleared)."""
    return {var: getattr(settings, name) for name, var in ENV.items()}


def cli(url: str, *args: str, environ: dict[str, str | None] | None = None) -> Result:
    """``ebind --nats <url> <args>`` through CliRunner with stdout and stderr apart."""
    cleared: dict[str, str | None] = dict.fromkeys(ENV.values())
    return CliRunner().invoke(main, ["--nats", url, *args], env={**cleared, **(environ or {})})


def options(settings: ConnectionSettings) -> dict[str, Any]:
    """nats-py options of ``settings`` (files checked, TLS context built)."""
    return nats_options(settings)


async def timed(coro: Any) -> tuple[float, BaseException | None]:
    """Seconds ``coro`` took and the exception it raised, if any."""
    start = time.monotonic()
    try:
        await coro
    except BaseException as exc:
        return time.monotonic() - start, exc
    return time.monotonic() - start, None
