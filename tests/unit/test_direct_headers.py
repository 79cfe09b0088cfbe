"""The header block the direct publish path writes is the one nats-py writes."""

from __future__ import annotations

import pytest
from nats.errors import BadHeaderError

from ebind.direct import header_block


def _nats_py_block(headers: dict[str, str]) -> bytes:
    # nats-py's _send_publish, step by step, without a connection.
    import nats.aio.client as c

    hdr = bytearray(c.NATS_HDR_LINE + c._CRLF_)
    for k, v in headers.items():
        key = k.strip()
        if not key:
            continue
        if not c._HEADER_KEY_RE.fullmatch(key):
            raise BadHeaderError(key)
        hdr.extend(key.encode() + b": " + v.strip().translate(c._HEADER_VALUE_NEWLINES).encode())
        hdr.extend(c._CRLF_)
    hdr.extend(c._CRLF_)
    return bytes(hdr)


@pytest.mark.parametrize(
    "headers",
    [
        {"Nats-Msg-Id": "abc"},
        {"Nats-Expected-Last-Subject-Sequence": "0", "Ebind-Signature": "v1 x"},
        {" Spaced ": "  value  ", "": "dropped"},
        {"Injected": "a\r\nPUB evil 1\r\nx"},
        {"Unicode": "naïve ✓"},
    ],
)
def test_the_block_matches_nats_py(headers: dict[str, str]) -> None:
    assert header_block(headers) == _nats_py_block(headers)


def test_a_header_name_nats_py_refuses_is_refused() -> None:
    with pytest.raises(BadHeaderError):
        header_block({"bad name": "x"})


@pytest.mark.parametrize("seq", [0, 1, 42, 2**63 - 1, 2**64 - 1])
def test_the_cas_block_matches_nats_py(seq: int) -> None:
    from ebind._jsreq import expect_last_block

    expected = _nats_py_block({"Nats-Expected-Last-Subject-Sequence": str(seq)})
    assert expect_last_block(seq) == expected
