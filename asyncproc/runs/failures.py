"""The most recent failed items of a run, read from committed dead-letter bytes only.

Only the tail of each dead-letter segment is read (at most ``TAIL`` bytes before its
committed length), so a run with millions of failures is shown as fast as one with few.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from .._errors import CorruptCheckpointError
from ..storage.protocol import Storage
from ..storage.records import SegmentRef, UnitCheckpoint
from ..storage.unitstore import SEGMENTS

TAIL = 256 * 1024


def tail_lines(path: Path, length: int, limit: int) -> list[bytes]:
    """The last ``limit`` whole lines in the first ``length`` bytes of ``path``."""
    start = max(0, length - TAIL)
    try:
        with path.open("rb") as fh:
            fh.seek(start)
            block = fh.read(length - start)
    except OSError:
        return []
    return _last_lines(block, start, limit)


def segment_tail(storage: Storage, name: str, length: int, limit: int) -> list[bytes]:
    """The last ``limit`` whole lines of a segment's committed bytes."""
    start = max(0, length - TAIL)
    try:
        block = b"".join(storage.read_segment(SEGMENTS + name, start, length - start))
    except (OSError, CorruptCheckpointError):
        return []
    return _last_lines(block, start, limit)


def _last_lines(block: bytes, start: int, limit: int) -> list[bytes]:
    lines = block.split(b"\n")
    if start > 0:
        lines = lines[1:]  # the first one may be cut
    return [line for line in lines if line.strip()][-limit:]


def _decode(lines: Iterable[bytes], unit: int | None) -> list[dict[str, Any]]:
    found = []
    for line in lines:
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            found.append(entry if unit is None else {"shard_id": unit, **entry})
    return found


def _newest(entries: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    entries.sort(key=lambda e: e.get("index", -1) if isinstance(e.get("index"), int) else -1)
    return entries[-limit:][::-1] if limit > 0 else []


def failures_from_segments(
    storage: Storage, checkpoints: Iterable[UnitCheckpoint], limit: int
) -> list[dict[str, Any]]:
    """The last ``limit`` committed failures over every unit, highest index first."""
    entries: list[dict[str, Any]] = []
    for checkpoint in checkpoints:
        refs: tuple[SegmentRef, ...] = checkpoint.dead_segments
        for ref in refs:
            lines = segment_tail(storage, ref.name, ref.length, limit)
            entries += _decode(lines, checkpoint.unit_id)
    return _newest(entries, limit)


def first_failure(path: Path) -> dict[str, Any] | None:
    """The first dead letter of a failed-items file (the lowest index), or None."""
    try:
        with path.open("rb") as fh:
            entries = _decode([fh.readline(TAIL)], None)
    except OSError:
        return None
    return entries[0] if entries else None


def failures_from_file(path: Path, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` failures of a finished run's failed-items file."""
    try:
        length = os.stat(path).st_size
    except OSError:
        return []
    return _newest(_decode(tail_lines(path, length, limit), None), limit)
