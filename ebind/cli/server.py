"""``ebind server``: run an embedded nats-server (or a local cluster) until Ctrl-C / SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import click

from ebind.cli.retention import describe, merged, merged_values, retention_options, retention_values
from ebind.embed import (
    Cluster,
    EmbedError,
    Node,
    ServerAuth,
    generate_token,
    start_cluster,
    start_node,
)
from ebind.errors import InvalidArguments
from ebind.retention import Retention

__all__ = ["server"]

_DURABILITY = {
    "always": "sync_interval=always (every JetStream write is fsynced before it is acknowledged)",
    "default": "sync_interval=default (NATS fsyncs every 2 min; an OS crash can lose acked writes)",
}


class _Stop:
    """A flag a signal handler sets: plain state, no lock.

    A ``threading.Event`` set from a handler can deadlock: the handler runs in the main
    thread, possibly while that thread is inside ``Event.wait`` holding the event's
    (non-reentrant) lock, and then ``set`` waits for it forever.
    """

    def __init__(self) -> None:
        self.requested = False

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless a stop was requested; whether one was (then or since)."""
        if not self.requested:
            time.sleep(seconds)
        return self.requested


@contextlib.contextmanager
def _stop_on_signal() -> Iterator[_Stop]:
    """Yield a flag set by SIGINT or SIGTERM; the previous handlers come back on exit."""
    stop = _Stop()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.requested = True

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@click.command("server")
@click.option(
    "--cluster",
    "size",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Run N routed nodes instead of one (0 = a single node).",
)
@click.option(
    "--store-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="JetStream store directory (default: a temporary one removed on exit).",
)
@click.option(
    "--port",
    type=click.IntRange(min=0, max=65535),
    default=4222,
    show_default=True,
    help="Client port of a single node; 0 picks a free one. Clusters always pick free ports.",
)
@click.option(
    "--sync-interval",
    type=click.Choice(["always", "default"]),
    default="always",
    show_default=True,
    help="JetStream fsync policy: 'always' (every write is on disk before it is confirmed) "
    "or the NATS default.",
)
@click.option(
    "--token",
    default=None,
    metavar="TOKEN|generate",
    help="Require clients to present this token; 'generate' makes a random one and prints "
    "the EBIND_NATS_TOKEN=... line clients use. A token given here is visible in ps: prefer "
    "'generate'.",
)
@retention_options
@click.pass_context
def server(
    ctx: click.Context,
    /,
    size: int,
    store_dir: Path | None,
    port: int,
    sync_interval: str,
    token: str | None,
    **retention: float | None,
) -> None:
    """Run an embedded nats-server with JetStream on 127.0.0.1 until interrupted.

    Every listener (clients, cluster routes, monitoring) binds 127.0.0.1 only. With a
    ``--retention-*`` option (here or on ``ebind``) or ``EBIND_RETENTION_*`` set, the ebind
    streams are created on it with those limits right away.
    """
    generated = token == "generate"
    if generated:
        token = generate_token()
    auth = ServerAuth(token=token) if token is not None else None
    obj = ctx.find_root().obj
    given = merged_values(obj.get("retention", {}) if obj else {}, retention_values(retention))
    # Handlers go in first so a signal during startup still ends in a clean shutdown.
    with _stop_on_signal() as stop:
        running = _start(size, store_dir, port, sync_interval, auth)
        try:
            urls = running.client_urls if isinstance(running, Cluster) else [running.client_url]
            if given:
                keep = merged(Retention(), given)
                _provision(urls, keep, replicas=min(size, 3) or 1, token=token)
                click.echo(f"retention: {describe(keep)}")
            click.echo(f"nats-server ready: {','.join(urls)}")
            if generated:
                click.echo("clients must present this token; in their shell run:")
                click.echo(f"  export EBIND_NATS_TOKEN={token}")
            elif token is not None:
                click.echo("clients must present the token (set $EBIND_NATS_TOKEN)")
            click.echo(f"durability: {_DURABILITY[sync_interval]}")
            click.echo(f"store: {store_dir if store_dir is not None else 'temporary'}")
            click.echo("press Ctrl-C to stop")
            # A timed wait keeps the main thread responsive to signals.
            while not stop.wait(0.5):
                pass
        finally:
            running.shutdown()
            click.echo("nats-server stopped")


def _provision(urls: list[str], retention: Retention, *, replicas: int, token: str | None) -> None:
    """Create the ebind streams with ``retention`` (an existing stream keeps its limits)."""

    async def run() -> None:
        import nats

        from ebind.streams import ensure_streams

        nc = await nats.connect(servers=urls, connect_timeout=5, allow_reconnect=False, token=token)
        try:
            await ensure_streams(nc.jetstream(), replicas, retention)
        finally:
            await nc.close()

    try:
        asyncio.run(run())
    except Exception as exc:
        raise click.ClickException(f"creating the ebind streams failed: {exc!r}") from exc


def _start(
    size: int, store_dir: Path | None, port: int, sync_interval: str, auth: ServerAuth | None
) -> Node | Cluster:
    try:
        if size > 0:
            return start_cluster(size, store_dir=store_dir, sync_interval=sync_interval, auth=auth)
        return start_node(
            port=port or None, store_dir=store_dir, sync_interval=sync_interval, auth=auth
        )
    except InvalidArguments as err:
        raise click.BadParameter(str(err), param_hint="--token") from None
    except EmbedError as err:
        raise click.ClickException(str(err)) from err
    except OSError as err:  # the store directory cannot be made (a file in the way, say)
        where = f" {err.filename}" if err.filename else ""
        raise click.BadParameter(
            f"cannot use{where} as the store directory: {err.strerror or err}",
            param_hint="--store-dir",
        ) from None
