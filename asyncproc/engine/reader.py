"""Reading the input forward as whole items, one large chunk per thread round trip."""

from __future__ import annotations

from aiofiles.threadpool.binary import AsyncBufferedReader

from .._errors import InputChangedError, option
from .items import BOM, Items, Lines, items_for

CHUNK = 1 << 18  # 256 KiB: one thread round trip per chunk, a few MB of lines in memory


class LineReader:
    """Whole items of an open input, forward from an item boundary, up to a moving end.

    ``end`` is given on every call because a unit's end can move back while it runs
    (a split): the reader never reads past the end it is given, and returns items only
    as far as it has read whole ones. Items are cut as the planner cut them
    (:mod:`.items`); a UTF-8 byte-order mark at the start of the input is skipped.
    """

    def __init__(
        self, fh: AsyncBufferedReader, start: int, name: str, chunk: int = CHUNK, *,
        format: str = "text",
    ) -> None:  # fmt: skip
        self._fh, self._name, self._chunk = fh, name, chunk
        self._items: Items = items_for(format)
        self._position = start  # bytes consumed from the file
        self._pieces: list[bytes] = []  # a line cut by a chunk boundary
        self.unread = start  # the first item boundary not yet returned

    async def next(self, end: int) -> Lines | None:
        """The next block of whole items before ``end``, or None when there are no more."""
        if self._position == 0 < end:
            await self._skip_bom(end)
        while self._position < end:
            chunk = await self._read(end)
            cut = self._items.last_cut(chunk)
            if not cut:
                self._pieces.append(chunk)
                continue
            block = b"".join((*self._pieces, chunk[:cut])) if self._pieces else chunk[:cut]
            self._pieces = [chunk[cut:]] if cut < len(chunk) else []
            lines = self._items.split(block, self.unread)
            self.unread = self._position - (len(chunk) - cut)
            return lines
        return self._tail(end)

    async def _read(self, end: int) -> bytes:
        chunk = await self._fh.read(min(self._chunk, end - self._position))
        if not chunk:
            raise InputChangedError(
                f"input {self._name} ended at byte {self._position}, before the planned "
                f"{end}; it changed during the run: start over with {option('new_run')}"
            )
        self._position += len(chunk)
        return chunk

    async def _skip_bom(self, end: int) -> None:
        """At the input's start: drop a UTF-8 byte-order mark, keep anything else."""
        head = await self._fh.read(min(len(BOM), end))
        self._position = len(head)
        if head == BOM:
            self.unread = len(BOM)
        elif head:
            self._pieces.append(head)

    def _tail(self, end: int) -> Lines | None:
        """The input's last items when it does not end with a line end (they end the range)."""
        tail, start = b"".join(self._pieces), self.unread
        self._pieces, self.unread = [], max(self.unread, self._position)
        if tail and start < end:
            lines = self._items.split(tail, start)
            return lines if lines[0] else None
        return None
