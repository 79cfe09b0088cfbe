"""A protocol parser for :class:`~ebind.direct.DirectClient` that reads messages in one pass.

nats-py's parser matches every control line against its ``MSG`` regex, then its ``HMSG``
regex, and deletes each message from the front of its buffer as it goes (a copy of the
rest each time); a worker reads two messages per task (the delivery and its stored
response's PubAck), so that was a measurable share of its CPU. This parser walks the
buffer with an offset, splits ``MSG`` / ``HMSG`` lines at whitespace, hands messages of
direct subscriptions to their handler without a coroutine, and trims the buffer once per
read.

Whatever it does not recognise as a well-formed ``MSG`` / ``HMSG`` line (``PING``,
``INFO``, ``-ERR``, a line cut short, an unusual separator) goes to nats-py's own parser
with the buffer and state it expects, so the protocol's other parts and its errors behave
exactly as before.
"""

from __future__ import annotations

import re
from typing import Any

from nats.protocol.parser import (
    AWAITING_CONTROL_LINE,
    AWAITING_MSG_PAYLOAD,
    Parser,
)

__all__ = ["DirectParser", "fits"]

_CRLF = b"\r\n"


def fits(parser: Any) -> bool:
    """Whether ``parser`` keeps the state this parser shares with nats-py's (its version's)."""
    return all(
        hasattr(parser, name) for name in ("buf", "state", "needed", "header_needed", "msg_arg")
    )


# Stricter than nats-py's patterns (single spaces, a numeric sid): a line they do not
# match goes to nats-py's parser, which reads (or refuses) it as it always did. A subject
# or reply ends only where the server splits arguments (space, tab, CR, LF): the server
# accepts and relays a subject holding another control byte (a vertical tab, a form feed),
# on which nats-py's own parser raises and ends the connection's read loop, so one such
# message from a producer would reset every subscriber.
_MSG = re.compile(rb"MSG ([^ \t\r\n]+) (\d+) (?:([^ \t\r\n]+) )?(\d+)\r\n")
_HMSG = re.compile(rb"HMSG ([^ \t\r\n]+) (\d+) (?:([^ \t\r\n]+) )?(\d+) (\d+)\r\n")
_H = ord("H")


def _line(buf: bytearray, pos: int) -> tuple[bytes, int, bytes, int, int, int] | None:
    """``(subject, sid, reply, header size, size, end)`` of the MSG/HMSG line at ``pos``."""
    if buf[pos] == _H:
        m = _HMSG.match(buf, pos)
        if m is None:
            return None
        subject, sid, reply, hsize, needed = m.groups()
        return subject, int(sid), reply or b"", int(hsize), int(needed), m.end()
    m = _MSG.match(buf, pos)
    if m is None:
        return None
    subject, sid, reply, needed = m.groups()
    return subject, int(sid), reply or b"", 0, int(needed), m.end()


class DirectParser(Parser):
    """nats-py's parser, with messages read in one pass (see the module docstring)."""

    async def parse(self, data: bytes = b"") -> None:
        """Parse ``data`` (appended to what is buffered) and dispatch every whole message."""
        buf = self.buf
        buf.extend(data)
        nc = self.nc
        pos = 0
        whole = True  # False: the rest is not something this parser reads
        try:
            while True:
                if self.state == AWAITING_CONTROL_LINE:
                    if pos >= len(buf):
                        break
                    line = _line(buf, pos)
                    if line is None:
                        whole = False
                        break
                    subject, sid, reply, hsize, needed, pos = line
                    if len(buf) - pos < needed + 2:
                        # The payload is still on its way: nats-py's state, as it keeps it.
                        self.msg_arg.update(subject=subject, sid=sid, reply=reply)
                        self.header_needed = hsize
                        self.needed = needed
                        self.state = AWAITING_MSG_PAYLOAD
                        break
                else:
                    needed = self.needed
                    if len(buf) - pos < needed + 2:
                        break
                    arg = self.msg_arg
                    subject, sid, reply = arg["subject"], arg["sid"], arg["reply"]
                    hsize = self.header_needed
                    self.header_needed = 0
                    self.state = AWAITING_CONTROL_LINE
                hdr = None
                if hsize > 0:
                    hdr = bytes(buf[pos : pos + hsize])
                    payload = bytes(buf[pos + hsize : pos + needed])
                else:
                    payload = bytes(buf[pos : pos + needed])
                pos += needed + 2
                done = nc._dispatch_now(sid, subject, reply, payload, hdr)
                if done is True:
                    continue
                # Not a direct subscription, or its handler raised: what follows may
                # suspend, so the buffer is trimmed to what is left first.
                del buf[:pos]
                pos = 0
                if not await self._handed_on(done, buf, sid, subject, reply, payload, hdr):
                    return  # the connection was reset meanwhile
        finally:
            if pos and self.buf is buf:
                del buf[:pos]
        if not whole and self.buf is buf:
            await Parser.parse(self)

    async def _handed_on(
        self,
        done: bool | Exception,
        buf: bytearray,
        sid: int,
        subject: bytes,
        reply: bytes,
        payload: bytes,
        hdr: bytes | None,
    ) -> bool:
        """nats-py's path for a message, or the error callback; False once the parser was reset."""
        if done is False:
            await self.nc._process_msg(sid, subject, reply, payload, hdr)
        elif isinstance(done, Exception):
            await self.nc._report(done)
        return self.buf is buf
