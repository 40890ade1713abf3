"""The final merge: committed segments, units in input order, into the output, atomically.

Streams a megabyte at a time; a crash at any point leaves either no output or the old
one (the new file appears by rename), and the merge can simply be run again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from ..storage.faults import crashpoint
from ..storage.protocol import Storage
from ..storage.records import SegmentRef, UnitCheckpoint
from ..storage.unitstore import UnitStore


def committed_chunks(
    storage: Storage, checkpoints: Iterable[UnitCheckpoint], dead: bool
) -> Iterator[bytes]:
    """Every committed byte of the output (or dead-letter) segments, in the order given."""
    for checkpoint in checkpoints:
        store = UnitStore(storage, checkpoint.unit_id)
        refs: tuple[SegmentRef, ...] = checkpoint.dead_segments if dead else checkpoint.segments
        for ref in refs:
            yield from store.read_committed(ref)


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def whole_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Re-cut a byte stream into blocks that end on a newline."""
    carry = b""
    for chunk in chunks:
        block = carry + chunk
        cut = block.rfind(b"\n") + 1
        carry = block[cut:]
        if cut:
            yield block[:cut]
    if carry:
        yield carry + b"\n"


def write_json_array(chunks: Iterable[bytes], fh: BinaryIO) -> None:
    """Lay JSON lines out as an array, one indented record per line."""
    separator = b"[\n  "
    for block in whole_lines(chunks):
        fh.write(separator + block[:-1].replace(b"\n", b",\n  "))
        separator = b",\n  "
    fh.write(b"[]\n" if separator == b"[\n  " else b"\n]\n")


def write_json_lines(chunks: Iterable[bytes], fh: BinaryIO) -> None:
    for chunk in chunks:
        fh.write(chunk)


def publish(path: Path, chunks: Iterable[bytes], as_array: bool, tag: str) -> None:
    """Write ``path`` whole or not at all: temporary file, fsync, rename, fsync dir."""
    tmp = path.with_name(f".{path.name}.{tag}.tmp")
    with tmp.open("wb") as fh:
        (write_json_array if as_array else write_json_lines)(chunks, fh)
        fh.flush()
        os.fsync(fh.fileno())
    crashpoint("before_rename_output")
    os.replace(tmp, path)
    fsync_dir(path.parent)


def failed_items_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.failed.jsonl")


def merge(
    storage: Storage, tag: str, checkpoints: list[UnitCheckpoint], output: Path, as_array: bool
) -> Path | None:
    """Write the output and the failed-items file; return the latter if there is one.

    ``checkpoints`` are the units' final checkpoints in order of the units' starts.
    """
    publish(output, committed_chunks(storage, checkpoints, dead=False), as_array, tag)
    crashpoint("after_output")
    failed = failed_items_path(output)
    if any(c.failed for c in checkpoints):
        publish(failed, committed_chunks(storage, checkpoints, dead=True), False, tag)
        return failed
    failed.unlink(missing_ok=True)
    return None
