"""What an item is: where a line ends and which lines are blank, found in bytes.

A text input's items are exactly the older text tool's: ``str.splitlines()`` of the
decoded file, each line ``str.strip()``-ed, blank lines dropped. So a line ends at
``\\n``, at a ``\\r`` not followed by ``\\n``, at ``\\v``, ``\\f``, ``\\x1c``-``\\x1e``, NEL
(U+0085), U+2028 or U+2029; and a line of nothing but Unicode whitespace (NBSP, an
ideographic space...) is blank. A JSONL input's items stay ``\\n``-delimited: one JSON
value per line.

The engine needs byte offsets (an item's offset is its identity), so this is done on
the bytes. Each of those line ends is a fixed UTF-8 sequence that cannot occur inside
another character, so cutting the bytes first and decoding each line afterwards gives
what decoding the file first and cutting it would, and a line that is not UTF-8 fails
alone, as an item. In ``\\r\\n`` the ``\\n`` ends the line and the ``\\r`` stays in the
line's bytes (stripping removes it), so a CRLF line is the same bytes however a block was
read. Every position just after a line end is an *item boundary*: units, index points,
checkpoints and reads start only there, and a ``\\r`` at the end of a chunk is never
taken for one (its ``\\n`` may be in the next chunk).

The planner (which counts items) and the reader (which yields them) go through the same
:class:`Items`, so they agree item for item. Most blocks hold neither the rarer line ends
nor non-ASCII whitespace: a few ``memchr`` scans of a 256 KiB block say so, and the plain
``\\n`` path runs; any other block goes through ``str.splitlines`` itself.
"""

from __future__ import annotations

import re

from .._errors import InputError

BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark: skipped at the start of an input

# The start, the raw bytes (without the line end) and the end of each item of a block.
# Flat lists, not a tuple per item: ints and bytes are not tracked by the cyclic
# garbage collector, so items waiting for a lane trigger no collections.
Lines = tuple[list[int], list[bytes], list[int]]

_TEXT_ENDS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines() cuts at
_RARE_ASCII_ENDS = (b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e")
_RARE_UTF8_ENDS = (b"\xc2\x85", b"\xe2\x80\xa8", b"\xe2\x80\xa9")
# Where a line may be cut when a chunk holds no "\n": after any other line end.
_ANY_END = re.compile(rb"[\x0b\x0c\x1c-\x1e]|\r(?!\n)|\xc2\x85|\xe2\x80[\xa8\xa9]")
# A blank line as bytes.strip() sees it, and as str.strip() sees it (Unicode whitespace).
_BLANK_LINE = re.compile(rb"^[ \t\r\x0b\x0c]*\n", re.MULTILINE)
# The first bytes of the Unicode whitespace characters bytes.strip() leaves in place.
_WS_LEADS = frozenset(b"\x1c\x1d\x1e\x1f\xc2\xe1\xe2\xe3")
_UNICODE_BLANK_LINE = re.compile(
    rb"^(?:[ \t\r\x0b\x0c\x1c-\x1f]|\xc2[\x85\xa0]|\xe1\x9a\x80|\xe2\x80[\x80-\x8a\xa8\xa9\xaf]"
    rb"|\xe2\x81\x9f|\xe3\x80\x80)*\n",
    re.MULTILINE,
)


def refuse_wide(head: bytes, name: str) -> None:
    """Refuse UTF-16 or UTF-32 input (a byte-order mark, or NULs throughout).

    Read as UTF-8 it would be garbage item by item; better one clear line before any work.
    """
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        found = "UTF-32 (it starts with a UTF-32 byte-order mark)"
    elif head.startswith((b"\xff\xfe", b"\xfe\xff")):
        found = "UTF-16 (it starts with a UTF-16 byte-order mark)"
    elif _nul_heavy(head):
        found = "UTF-16 or UTF-32 (every other byte or more is NUL)"
    else:
        return
    raise InputError(
        f"input {name} looks like {found}; asyncproc reads UTF-8: convert it first, "
        f"e.g. iconv -f UTF-16 -t UTF-8 {name} > converted.txt"
    )


def _nul_heavy(head: bytes) -> bool:
    """Three quarters of the bytes at even or at odd positions are NUL (ASCII as UTF-16/32)."""
    if len(head) < 8:
        return False
    evens, odds = head[0::2], head[1::2]
    return evens.count(0) * 4 >= len(evens) * 3 or odds.count(0) * 4 >= len(odds) * 3


def bom_length(head: bytes) -> int:
    """Bytes of a UTF-8 byte-order mark at the start of the input (0 or 3)."""
    return len(BOM) if head.startswith(BOM) else 0


class Items:
    """The items of a JSONL input: ``\\n``-delimited, blank when ``bytes.strip()`` is empty."""

    def last_cut(self, chunk: bytes) -> int:
        """Just past the last item boundary in ``chunk`` that is safe to cut at (0: none)."""
        return chunk.rfind(b"\n") + 1

    def split(self, block: bytes, base: int) -> Lines:
        """The items of ``block`` (read from ``base``), which ends at a boundary or the end."""
        return _split_plain(block, base)

    def count(self, data: bytes) -> int:
        """How many items ``data`` holds; it starts at a boundary, may end anywhere."""
        whole = data.count(b"\n") - len(_BLANK_LINE.findall(data))
        tail = data[data.rfind(b"\n") + 1 :]
        return whole + (1 if tail.strip() else 0)

    def line_end(self, data: bytes | bytearray) -> int | None:
        """Just past the first line end in ``data``, or None if it may lie further on."""
        newline = data.find(b"\n")
        return None if newline < 0 else newline + 1

    def first(self, line: bytes) -> bytes:
        """The raw bytes of the item that starts ``line`` (read from an item's offset)."""
        return line.split(b"\n", 1)[0]


class TextItems(Items):
    """The older text tool's items: ``str.splitlines()`` and ``str.strip()``, in bytes."""

    def last_cut(self, chunk: bytes) -> int:
        cut = chunk.rfind(b"\n") + 1
        if cut or not _has_rare_ends(chunk, chunk.isascii()):
            return cut
        ends = [m.end() for m in _ANY_END.finditer(chunk)]
        if ends and chunk[ends[-1] - 1 :] == b"\r":  # its "\n" may come in the next chunk
            ends.pop()
        return ends[-1] if ends else 0

    def split(self, block: bytes, base: int) -> Lines:
        ascii = block.isascii()
        if _has_rare_ends(block, ascii):
            return _split_text(block, base)
        return _split_plain(block, base, unicode_blanks=not ascii or b"\x1f" in block)

    def count(self, data: bytes) -> int:
        ascii = data.isascii()
        if _has_rare_ends(data, ascii):
            text = data.decode("utf-8", "surrogateescape")
            return sum(1 for line in text.splitlines() if line.strip())
        careful = not ascii or b"\x1f" in data
        blank = _UNICODE_BLANK_LINE if careful else _BLANK_LINE
        whole = data.count(b"\n") - len(blank.findall(data))
        tail = data[data.rfind(b"\n") + 1 :]
        return whole + (0 if _blank(tail) else 1)

    def line_end(self, data: bytes | bytearray) -> int | None:
        newline = data.find(b"\n")
        other = _ANY_END.search(data, 0, newline + 1 if newline >= 0 else len(data))
        if other is None:
            return None if newline < 0 else newline + 1
        if other.end() == len(data) and data.endswith(b"\r"):
            return None  # a "\r" at the end: its "\n" may follow
        return other.end()

    def first(self, line: bytes) -> bytes:
        _, raws, _ = self.split(line, 0)
        return raws[0] if raws else b""


_JSONL, _TEXT = Items(), TextItems()


def items_for(fmt: str) -> Items:
    """How the items of an input of format ``fmt`` (``text`` or ``jsonl``) are found."""
    return _JSONL if fmt == "jsonl" else _TEXT


def _has_rare_ends(block: bytes, ascii: bool) -> bool:
    """Whether ``block`` ends a line anywhere but at ``\\n``: memchr scans, mostly."""
    if b"\r" in block and block.count(b"\r") != block.count(b"\r\n"):
        return True
    if any(end in block for end in _RARE_ASCII_ENDS):
        return True
    if ascii:
        return False
    return (b"\xc2" in block and b"\xc2\x85" in block) or (
        b"\xe2" in block and (b"\xe2\x80\xa8" in block or b"\xe2\x80\xa9" in block)
    )


def _blank(line: bytes) -> bool:
    """Blank as ``str.strip()`` sees it (undecodable bytes are not blank: the item fails).

    Past the ASCII whitespace ``bytes.strip()`` removes, a line can only be blank if its
    first byte starts a Unicode whitespace character; only then is it decoded.
    """
    stripped = line.strip()
    return not stripped or (
        stripped[0] in _WS_LEADS and not stripped.decode("utf-8", "surrogateescape").strip()
    )


def _split_plain(block: bytes, base: int, *, unicode_blanks: bool = False) -> Lines:
    """Split at ``\\n`` only (the block has no other line end)."""
    starts: list[int] = []
    raws: list[bytes] = []
    ends: list[int] = []
    add_start, add_raw, add_end = starts.append, raws.append, ends.append
    leads = _WS_LEADS if unicode_blanks else frozenset()
    start = base
    lines = block.split(b"\n")
    tail = lines.pop()
    for line in lines:
        end = start + len(line) + 1
        stripped = line.strip()
        if stripped and not (stripped[0] in leads and _blank(stripped)):
            add_start(start)
            add_raw(line)
            add_end(end)
        start = end
    stripped = tail.strip()
    if stripped and not (stripped[0] in leads and _blank(stripped)):  # the last line, no end
        add_start(start)
        add_raw(tail)
        add_end(start + len(tail))
    return starts, raws, ends


def _split_text(block: bytes, base: int) -> Lines:
    """Split at every line end ``str.splitlines()`` knows, keeping exact byte offsets."""
    starts: list[int] = []
    raws: list[bytes] = []
    ends: list[int] = []
    start = base
    for piece in block.decode("utf-8", "surrogateescape").splitlines(keepends=True):
        body = piece[:-1] if piece[-1] in _TEXT_ENDS else piece  # "\r\n": the "\r" stays
        size = len(piece) if piece.isascii() else len(piece.encode("utf-8", "surrogateescape"))
        if body.strip():
            starts.append(start)
            raws.append(body.encode("utf-8", "surrogateescape"))
            ends.append(start + size)
        start += size
    return starts, raws, ends
