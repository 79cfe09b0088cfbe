"""Records another tool wrote (a heartbeat far in the past, a slot token int() refuses) are
skipped or counted as unreadable by `ebind worker ls` / `ebind concurrency ls`, never a
traceback."""

from __future__ import annotations

import asyncio

import nats
import pytest
from cli_helpers import invoke, publish_raw

from ebind.embed import Node
from ebind.inspection import worker_key
from ebind.streams import KV_LEASES

pytestmark = pytest.mark.timeout(60)


def _publish(url: str, subject: str, data: bytes) -> None:
    publish_raw(url, subject, data, {"Nats-TTL": "60s"})


def _delete(url: str, subject: str) -> None:
    async def go() -> None:
        nc = await nats.connect(url)
        try:
            await nc.jetstream().publish(subject, b"", headers={"KV-Operation": "PURGE"})
        finally:
            await nc.close()

    asyncio.run(go())


@pytest.mark.parametrize("at", [b"-1e15", b"-1e300"])
def test_worker_ls_with_a_far_past_heartbeat(nats_node: Node, at: bytes) -> None:
    # Valid ids and counts, but `at` far in the past: an age from it would overflow timedelta.
    url = nats_node.client_url
    subject = f"$KV.{KV_LEASES}.{worker_key('old')}"
    _publish(url, subject, b'{"worker_id":"old","at":' + at + b"}")
    try:
        result = invoke(url, "worker", "ls")
        assert "Traceback" not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(
            result.exception
        )
    finally:
        _delete(url, subject)


@pytest.mark.parametrize("slot", ["\u00b2", "99999"])
def test_concurrency_ls_with_an_odd_slot_token(nats_node: Node, slot: str) -> None:
    # '²' passes str.isdigit() but not int(); a five-digit slot is past any limit.
    url = nats_node.client_url
    subject = f"$KV.{KV_LEASES}.conc.{'a' * 32}.{slot}"
    _publish(url, subject, b"{}")
    try:
        result = invoke(url, "concurrency", "ls")
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(
            result.exception
        )
        assert "Traceback" not in result.output
    finally:
        _delete(url, subject)
