"""list_last: the newest live record of every key under a filter, whatever the records hold."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError
from raw_client import store_raw

from ebind.workflow._kvread import MULTI_LAST_LIMIT, list_last

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[Any]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(
            name="KV_b",
            subjects=["$KV.b.>"],
            allow_direct=True,
            max_msgs_per_subject=1,
            allow_rollup_hdrs=True,
            allow_msg_ttl=True,
            subject_delete_marker_ttl=60,
        )
    )
    try:
        yield js
    finally:
        await nc.close()


def _keys(found: list[Any]) -> list[str]:
    return sorted(m.subject.removeprefix("$KV.b.") for m in found)


async def test_deleted_purged_and_expired_keys_are_left_out(js: Any) -> None:
    kv = await js.key_value("b")
    await kv.put("a.live", b"1")
    await kv.put("a.deleted", b"2")
    await kv.delete("a.deleted")
    await kv.put("a.purged", b"3")
    await kv.purge("a.purged")
    await js.publish("$KV.b.a.expiring", b"4", headers={"Nats-TTL": "1s"})
    await kv.put("other", b"5")
    assert _keys(await list_last(js, "KV_b", "$KV.b.a.>")) == ["a.expiring", "a.live"]
    await asyncio.sleep(2.5)  # the server's TTL marker replaces the expired record
    assert _keys(await list_last(js, "KV_b", "$KV.b.a.>")) == ["a.live"]


async def test_a_missing_bucket_raises_not_found(js: Any) -> None:
    with pytest.raises(NotFoundError):
        await list_last(js, "KV_missing", "$KV.missing.>")


@pytest.mark.parametrize(
    "headers",
    [
        {"Status": "204", "Nats-UpTo-Sequence": "1"},
        {"Status": "204", "Description": "EOB"},
        {"Status": "404"},
        {"Status": "413", "Description": "Too Many Results"},
    ],
)
@pytest.mark.parametrize("many", [False, True])
async def test_a_record_with_status_headers_neither_ends_nor_breaks_the_listing(
    js: Any, headers: dict[str, str], many: bool
) -> None:
    # Whoever may write one key can store any headers with it: the listing must still
    # return every key (past the batch limit too, where it reads through a consumer).
    count = MULTI_LAST_LIMIT + 5 if many else 6
    names = [f"a.k{i:05d}" for i in range(count)]
    await asyncio.gather(*(js.publish(f"$KV.b.{n}", b"v") for n in names[:3]))
    await js.publish("$KV.b.a.hostile", b"h", headers=headers)
    await asyncio.gather(*(js.publish(f"$KV.b.{n}", b"v") for n in names[3:]))
    got = await asyncio.wait_for(list_last(js, "KV_b", "$KV.b.a.>"), 20)
    assert _keys(got) == sorted([*names, "a.hostile"])


async def test_batched_and_single_direct_gets_return_a_record_with_a_status_header(
    js: Any,
) -> None:
    from ebind._jsreq import requests_for

    await js.publish("$KV.b.a.first", b"1")
    await js.publish("$KV.b.a.hostile", b"h", headers={"Status": "204", "Description": "EOB"})
    await js.publish("$KV.b.a.last", b"2")
    fast = requests_for(js._nc)
    subjects = ["$KV.b.a.first", "$KV.b.a.hostile", "$KV.b.a.last"]
    got = await fast.get_batch("KV_b", subjects)
    assert [m.headers["Nats-Subject"] for m in got] == subjects
    one = await fast.get_last("KV_b", "$KV.b.a.hostile")
    assert one is not None and one.data == b"h"


# Header blocks whose last line is not terminated: the server appends its own headers to a
# stored record's block, and the first of them (Nats-Stream) runs into that line, so the
# record comes back looking like the server's end-of-batch or not-found status.
CUT_SHORT = {
    "status-404-line": b"NATS/1.0\r\nStatus: 404\r\nX\r\n",
    "status-204-line": (b"NATS/1.0\r\nStatus: 204\r\nDescription: EOB\r\nNats-Num-Pending: 0\r\nX"),
    "inline-204": b"NATS/1.0 204 EOB",
    "inline-404": b"NATS/1.0 404 Message Not Found",
}


@pytest.mark.parametrize("header", sorted(CUT_SHORT))
@pytest.mark.parametrize("many", [False, True])
async def test_a_record_whose_header_block_swallows_the_servers_neither_ends_the_listing(
    js: Any, nats_url: str, header: str, many: bool
) -> None:
    count = MULTI_LAST_LIMIT + 5 if many else 6
    names = [f"a.k{i:05d}" for i in range(count)]
    await asyncio.gather(*(js.publish(f"$KV.b.{n}", b"v") for n in names[:3]))
    await store_raw(nats_url, b"$KV.b.a.hostile", CUT_SHORT[header], b"h")
    await asyncio.gather(*(js.publish(f"$KV.b.{n}", b"v") for n in names[3:]))
    got = await asyncio.wait_for(list_last(js, "KV_b", "$KV.b.a.>"), 20)
    assert _keys(got) == sorted([*names, "a.hostile"])


@pytest.mark.parametrize("header", sorted(CUT_SHORT))
@pytest.mark.parametrize("direct", [False, True], ids=["nats-py", "ebind-client"])
async def test_direct_gets_return_a_record_whose_header_block_swallows_the_servers(
    js: Any, nats_url: str, header: str, direct: bool
) -> None:
    from ebind._jsreq import requests_for
    from ebind.direct import DirectClient

    await js.publish("$KV.b.a.first", b"1")
    await store_raw(nats_url, b"$KV.b.a.hostile", CUT_SHORT[header], b"h")
    await js.publish("$KV.b.a.last", b"2")
    nc = js._nc
    if direct:  # the client every ebind connection is: replies parsed lazily, in the read loop
        nc = DirectClient()
        await nc.connect(nats_url)
    try:
        fast = requests_for(nc)
        subjects = ["$KV.b.a.first", "$KV.b.a.hostile", "$KV.b.a.last"]
        got = await fast.get_batch("KV_b", subjects)
        assert [m.headers["Nats-Subject"] for m in got] == subjects
        one = await fast.get_last("KV_b", "$KV.b.a.hostile")
        assert one is not None and one.data == b"h"
    finally:
        if direct:
            await nc.close()
