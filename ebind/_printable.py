"""Text from records another program may have written, made safe to print on a terminal."""

from __future__ import annotations

import re

__all__ = ["Styled", "printable"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class Styled(str):
    """Text ebind styled itself, from parts already made printable: its escapes are ebind's."""

    __slots__ = ()


def printable(text: str) -> str:
    """``text`` with every control character shown as ``?``; :class:`Styled` text as it is.

    Cells hold strings read from records another program may have written; an escape
    sequence in one could move the cursor, rewrite the screen, hide what follows (a colour
    code too: black on black) or set the terminal title. Only text ebind styled itself
    keeps its colour codes.
    """
    if isinstance(text, Styled):
        return text
    return _CONTROL.sub("?", text)
