"""ebind's one-pass protocol parser reads every byte stream exactly as nats-py's parser does.

Streams of MSG/HMSG deliveries mixed with PING, +OK, INFO, odd separators and payloads that
hold CRLF, cut at random places, must yield the same messages and leave the same state.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from nats.errors import ProtocolError
from nats.protocol.parser import Parser

from ebind._parse import DirectParser, fits


class _Conn:
    """What a parser calls back; ``direct`` sids (even ones) go through ``_dispatch_now``."""

    def __init__(self, direct: bool) -> None:
        self.got: list[tuple[Any, ...]] = []
        self.direct = direct

    def _dispatch_now(self, sid: int, subject: bytes, reply: bytes, data: bytes, hdr: Any) -> Any:
        if not self.direct or sid % 2 or sid % 10 == 2:
            return False
        if sid % 10 == 4:
            return ValueError("handler failed")  # reported, and the message counts as read
        self.got.append(("msg", sid, subject, reply, data, hdr))
        return True

    async def _process_msg(self, sid: int, subject: Any, reply: Any, data: bytes, hdr: Any) -> None:
        # As DirectClient does: a direct subscription's handler first, nats-py's path else.
        done = self._dispatch_now(sid, bytes(subject), bytes(reply), data, hdr)
        if done is False:
            self.got.append(("msg", sid, bytes(subject), bytes(reply), data, hdr))
        elif done is not True:
            await self._report(done)

    async def _report(self, exc: Exception) -> None:
        self.got.append(("reported",))

    async def _process_ping(self) -> None:
        self.got.append(("ping",))

    async def _process_pong(self) -> None:
        self.got.append(("pong",))

    async def _process_info(self, info: Any) -> None:
        self.got.append(("info", info))

    async def _process_err(self, err: str) -> None:
        self.got.append(("err", err))


def _stream(n: int, rnd: random.Random) -> bytes:
    out = []
    for i in range(n):
        k = rnd.random()
        if k < 0.4:
            hdr = b"NATS/1.0\r\nNats-Msg-Id: x%d\r\n\r\n" % i
            body = b'{"id":"%d"}' % i
            line = b"HMSG TASKS.t %d $JS.ACK.TASKS.w.1.%d.%d.17.3 %d %d\r\n"
            out.append(line % (i, i, i, len(hdr), len(hdr) + len(body)) + hdr + body + b"\r\n")
        elif k < 0.6:
            body = b'{"stream":"EBIND_RESP","seq":%d}' % i
            out.append(b"MSG _INBOX.a.%d %d %d\r\n" % (i, i, len(body)) + body + b"\r\n")
        elif k < 0.7:
            out.append(b"MSG x %d r 0\r\n\r\n" % i)
        elif k < 0.75:
            hdr = b"NATS/1.0 408 Request Timeout\r\n\r\n"
            out.append(b"HMSG _INBOX.p %d %d %d\r\n" % (i, len(hdr), len(hdr)) + hdr + b"\r\n")
        elif k < 0.8:
            out.append(b"PING\r\n")
        elif k < 0.85:
            out.append(b"+OK\r\n")
        elif k < 0.9:
            out.append(b'INFO {"a":1}\r\n')
        else:  # a tab and double spaces, and a payload holding CRLF: nats-py's parser reads it
            body = b"a\r\nb"
            out.append(b"MSG\tsub  %d  %d\r\n" % (i, len(body)) + body + b"\r\n")
    return b"".join(out)


async def _feed(cls: type[Parser], data: bytes, cuts: list[int], direct: bool) -> Any:
    conn = _Conn(direct)
    parser = cls(conn)
    prev = 0
    for cut in [*cuts, len(data)]:
        await parser.parse(data[prev:cut])
        prev = cut
    got = [g for g in conn.got if g[0] != "reported"]
    return got, bytes(parser.buf), parser.state


async def test_random_streams_cut_anywhere_read_as_nats_py_reads_them() -> None:
    rnd = random.Random(7)
    for _ in range(200):
        data = _stream(rnd.randint(1, 40), rnd)
        cuts = sorted(rnd.sample(range(1, len(data)), min(len(data) - 1, rnd.randint(0, 12))))
        expected = await _feed(Parser, data, cuts, direct=False)
        for direct in (False, True):
            got = await _feed(DirectParser, data, cuts, direct)
            if direct:  # a failed handler's message is reported instead of delivered
                expected_direct = [g for g in expected[0] if not (g[0] == "msg" and g[1] % 10 == 4)]
                assert got == (expected_direct, *expected[1:])
            else:
                assert got == expected


async def test_a_failing_direct_handler_is_reported_and_reading_goes_on() -> None:
    conn = _Conn(direct=True)
    parser = DirectParser(conn)
    await parser.parse(b"MSG a 4 2\r\nhi\r\nMSG b 6 2\r\nho\r\n")
    assert conn.got == [("reported",), ("msg", 6, b"b", b"", b"ho", None)]


@pytest.mark.parametrize("line", [b"BOGUS\r\n", b"MSG a notanumber 2\r\nhi\r\n", b"\r\n"])
async def test_what_nats_py_refuses_is_still_refused(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        await Parser(_Conn(False)).parse(line)
    with pytest.raises(ProtocolError):
        await DirectParser(_Conn(True)).parse(line)


def test_the_installed_nats_py_parser_keeps_the_shared_state() -> None:
    assert fits(Parser(None))
    assert not fits(object())


@pytest.mark.parametrize("byte", [b"\x0b", b"\x0c", b"\x1c", b"\x85"])
@pytest.mark.parametrize("direct", [True, False])
async def test_a_subject_holding_a_control_byte_is_read_not_refused(
    byte: bytes, direct: bool
) -> None:
    # The server splits protocol arguments only on space, tab, CR and LF, and relays a
    # subject holding any other byte; nats-py's parser would refuse the line and end the
    # read loop, so one producer's publish would reset every subscriber.
    conn = _Conn(direct)
    parser = DirectParser(conn)
    subject, reply = b"TASKS.a" + byte + b"b", b"r" + byte
    hdr = b"NATS/1.0\r\n\r\n"
    await parser.parse(
        b"MSG %s 6 2\r\nhi\r\n" % subject
        + b"HMSG %s 8 %s %d %d\r\n" % (subject, reply, len(hdr), len(hdr) + 2)
        + hdr
        + b"ho\r\n"
    )
    assert conn.got == [
        ("msg", 6, subject, b"", b"hi", None),
        ("msg", 8, subject, reply, b"ho", hdr),
    ]
