"""Reading a shard's byte range as items, one large chunk per thread round trip."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiofiles

from ._errors import InputChangedError

CHUNK = 1 << 18  # 256 KiB: one thread round trip per chunk, a few MB of lines in memory

# (start offset, end offset just past the newline, the raw line without its newline)
Line = tuple[int, int, bytes]


async def read_lines(path: Path, start: int, end: int) -> AsyncIterator[list[Line]]:
    """Yield the non-blank lines of ``[start, end)`` a chunk at a time, with their offsets."""
    async with aiofiles.open(path, "rb") as fh:
        await fh.seek(start)
        position, pieces, carry_start = start, [], start
        while position < end:
            chunk = await fh.read(min(CHUNK, end - position))
            if not chunk:
                raise InputChangedError(
                    f"input {path} ended at byte {position}, before the planned {end}; "
                    "it changed during the run: start over with --new-run"
                )
            position += len(chunk)
            cut = chunk.rfind(b"\n") + 1
            if not cut:
                pieces.append(chunk)
                continue
            block = b"".join((*pieces, chunk[:cut])) if pieces else chunk[:cut]
            pieces = [chunk[cut:]] if cut < len(chunk) else []
            yield split_lines(block, carry_start)
            carry_start = position - (len(chunk) - cut)
        tail = b"".join(pieces)
        if tail.strip():
            yield [(carry_start, end, tail)]


def split_lines(block: bytes, base: int) -> list[Line]:
    """Split whole lines (``block`` ends with a newline), keeping the non-blank ones."""
    lines: list[Line] = []
    append_line = lines.append
    start = base
    for line in block.split(b"\n")[:-1]:
        end = start + len(line) + 1
        if line.strip():
            append_line((start, end, line))
        start = end
    return lines
