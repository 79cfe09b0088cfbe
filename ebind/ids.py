"""Random task ids: UUID4 strings cut from a buffer of OS randomness.

One ``os.urandom`` call per id was a system call on every ``delay()``; a buffer of 256 ids
costs one call per 256 ids with the same randomness. A forked child drops the buffer it
inherited (else parent and child would hand out the same ids), and a lock keeps two
threads from cutting the same slice.
"""

from __future__ import annotations

import os
import threading

__all__ = ["format_uuid4", "new_reply_token", "new_task_id"]

_ID_BYTES = 16
_BATCH = 256

_lock = threading.Lock()
_buffer = b""
_offset = 0


def format_uuid4(raw: bytes) -> str:
    """The RFC 4122 version-4 UUID string of 16 random bytes (version and variant set)."""
    if len(raw) != _ID_BYTES:
        raise ValueError(f"a UUID takes {_ID_BYTES} bytes, got {len(raw)}")
    b = bytearray(raw)
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _random16() -> bytes:
    """16 bytes cut from the buffer (refilled with one ``os.urandom`` call when spent)."""
    global _buffer, _offset
    with _lock:
        if _offset >= len(_buffer):
            _buffer = os.urandom(_ID_BYTES * _BATCH)
            _offset = 0
        start = _offset
        _offset = start + _ID_BYTES
        return _buffer[start : start + _ID_BYTES]


def new_task_id() -> str:
    """A random UUID4 string (``str(uuid.uuid4())`` costs ~3× and a system call each)."""
    return format_uuid4(_random16())


def new_reply_token() -> str:
    """A random 128-bit secret, 32 hex characters, that a task's response must echo."""
    return _random16().hex()


def _forget_buffer() -> None:
    global _buffer, _offset, _lock
    _lock = threading.Lock()  # a lock held by another thread at fork time stays held
    _buffer = b""
    _offset = 0


os.register_at_fork(after_in_child=_forget_buffer)
