"""Reading the input forward as whole lines, one large chunk per thread round trip."""

from __future__ import annotations

from aiofiles.threadpool.binary import AsyncBufferedReader

from .._errors import InputChangedError

CHUNK = 1 << 18  # 256 KiB: one thread round trip per chunk, a few MB of lines in memory

# A chunk of non-blank lines: their start offsets, and their bytes without the newline.
# Two flat lists rather than a tuple per line: ints and bytes are not tracked by the
# cyclic garbage collector, so lines waiting for a lane trigger no collections.
Lines = tuple[list[int], list[bytes]]


class LineReader:
    """Whole lines of an open input, forward from a line start, up to a moving end.

    ``end`` is given on every call because a unit's end can move back while it runs
    (a split): the reader never reads past the end it is given, and returns lines only
    as far as it has read whole ones.
    """

    def __init__(self, fh: AsyncBufferedReader, start: int, name: str, chunk: int = CHUNK) -> None:
        self._fh, self._name, self._chunk = fh, name, chunk
        self._position = start  # bytes consumed from the file
        self._pieces: list[bytes] = []  # a line cut by a chunk boundary
        self.unread = start  # the first line start not yet returned

    async def next(self, end: int) -> Lines | None:
        """The next block of whole lines before ``end``, or None when there are no more."""
        while self._position < end:
            chunk = await self._fh.read(min(self._chunk, end - self._position))
            if not chunk:
                raise InputChangedError(
                    f"input {self._name} ended at byte {self._position}, before the planned "
                    f"{end}; it changed during the run: start over with --new-run"
                )
            self._position += len(chunk)
            cut = chunk.rfind(b"\n") + 1
            if not cut:
                self._pieces.append(chunk)
                continue
            block = b"".join((*self._pieces, chunk[:cut])) if self._pieces else chunk[:cut]
            self._pieces = [chunk[cut:]] if cut < len(chunk) else []
            lines = split_lines(block, self.unread)
            self.unread = self._position - (len(chunk) - cut)
            return lines
        return self._tail(end)

    def _tail(self, end: int) -> Lines | None:
        """The input's last line when it has no newline (it ends the range)."""
        tail, start = b"".join(self._pieces), self.unread
        self._pieces, self.unread = [], max(self.unread, self._position)
        if tail.strip() and start < end:
            return [start], [tail]
        return None


def split_lines(block: bytes, base: int) -> Lines:
    """Split whole lines (``block`` ends with a newline), keeping the non-blank ones."""
    starts: list[int] = []
    raws: list[bytes] = []
    add_start, add_raw = starts.append, raws.append
    start = base
    for line in block.split(b"\n")[:-1]:
        if line.strip():
            add_start(start)
            add_raw(line)
        start += len(line) + 1
    return starts, raws
