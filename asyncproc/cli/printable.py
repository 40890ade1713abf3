"""Text from data, made safe for a terminal: control characters are shown, never obeyed.

Paths, item errors, run descriptions and whatever a server answered reach the terminal
in error lines, the closing line, logs and the ``list``/``show``/``status`` tables. A
terminal obeys the escape sequences such text may hold (retitle the window, rewrite
the screen, hide what follows), and a newline would break the promise of one line per
error. Every such text goes through :func:`printable` (the tables' cells as plain
``rich`` text, never markup): C0 and C1 controls, DEL and the bidirectional overrides
become ``\\x1b``-style escapes.
"""

from __future__ import annotations

import logging
import re

# C0 controls (a tab too: it moves the cursor), DEL, C1 controls, and the Unicode
# bidirectional embeddings, overrides and isolates that reorder what a terminal shows.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object) -> str:
    """``text`` as one line a terminal shows and never obeys."""
    return _UNSAFE.sub(_escaped, str(text))


class PrintableFormatter(logging.Formatter):
    """Log lines with their message made printable (a traceback keeps its lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))
