"""Text from records another program may have written, made safe to print on a terminal."""

from __future__ import annotations

import re

__all__ = ["printable"]

_CONTROL = re.compile(r"\x1b\[[0-9;]*m|[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with every control character shown as ``?``, colour codes kept.

    Cells hold strings read from records another program may have written; an escape
    sequence in one could move the cursor, rewrite the screen or set the terminal title.
    """
    return _CONTROL.sub(lambda m: m.group() if len(m.group()) > 1 else "?", text)
