"""Text from records another program may have written, made safe to print on a terminal."""

from __future__ import annotations

import re

__all__ = ["printable"]

# The colour codes ebind's own styling writes (click.style: reset, bold, dim, underline,
# a foreground colour); a table cell holds them around text it styled. Any other escape
# (conceal, which hides the rest of the screen, or a cursor move) is shown as "?".
_CONTROL = re.compile(r"\x1b\[(?:0|1|2|4|22|24|39|3[0-7]|9[0-7])m|[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with every control character shown as ``?``, ebind's own colour codes kept.

    Cells hold strings read from records another program may have written; an escape
    sequence in one could move the cursor, rewrite the screen, hide what follows or set
    the terminal title.
    """
    return _CONTROL.sub(lambda m: m.group() if len(m.group()) > 1 else "?", text)
