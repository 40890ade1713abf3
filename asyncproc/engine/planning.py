"""Planning: identify the input, count its items, index it sparsely, cut it into units.

Plain blocking functions; the coordinator runs them in a worker thread. Planning reads
the whole input once: to count items (so every unit knows the index of its first item)
and to record a sparse line index (the item index at a line start every few KiB), so
that any range left later can be cut again, at an indexed point, without reading the
input a second time. Resuming never reads the input: it re-reads only the fixed samples
of :func:`fingerprint`.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .._errors import InputError
from ..storage.records import InputIdentity, LineIndex, UnitPlan
from .items import Items, bom_length, items_for, refuse_wide

CHUNK = 1 << 18  # 256 KiB: larger reads were no faster and raised peak memory
SAMPLE = 4096
SAMPLES = 16
INDEX_POINTS = 16384  # at most this many index entries (about 250 KB on disk)
MIN_INDEX_GAP = 1024  # and no closer than this many bytes apart


def check_input(path: Path) -> os.stat_result:
    """Stat the input, turning every way it can be unusable into one InputError."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"input {path} does not exist; check the input path") from None
    except OSError as exc:
        raise InputError(f"cannot read input {path}: {exc.strerror}") from exc
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"input {path} is a directory; give a line-oriented file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(
            f"input {path} is {_kind(st.st_mode)}, not a regular file: asyncproc reads its "
            "input more than once (to plan, to work, to resume after a crash); save it to "
            "a file first (e.g. `cat > input.txt`) and give that"
        )
    if not os.access(path, os.R_OK):
        raise InputError(f"input {path} is not readable; check its permissions")
    if st.st_size == 0 and _has_bytes(path):
        raise InputError(
            f"input {path} says it holds 0 bytes but does not (a pseudo-file, like those "
            "under /proc): asyncproc plans by size and reads by offset; copy it to a "
            "regular file first (e.g. `cp` it) and give that"
        )
    return st


def _has_bytes(path: Path) -> bool:
    """Whether a file that stats as empty yields bytes when read (a pseudo-file)."""
    try:
        with path.open("rb") as fh:
            return fh.read(1) != b""
    except OSError:
        return False


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"


def fingerprint(fh: BinaryIO, size: int) -> str:
    """Hash the size, head, tail and evenly spaced samples: O(1) reads, for any size."""
    digest = hashlib.blake2b(str(size).encode(), digest_size=16)
    for position in _sample_positions(size):
        fh.seek(position)
        digest.update(fh.read(SAMPLE))
    return digest.hexdigest()


def _sample_positions(size: int) -> list[int]:
    if size <= SAMPLE * (SAMPLES + 2):
        return [0] if size else []
    step = size // (SAMPLES + 1)
    return [0, *(step * k for k in range(1, SAMPLES + 1)), size - SAMPLE]


def identify(path: Path) -> InputIdentity:
    """Describe the input as it is now, for planning or for a resume check."""
    st = check_input(path)
    with path.open("rb") as fh:
        digest = fingerprint(fh, st.st_size)
    return InputIdentity(str(path.resolve()), st.st_size, st.st_mtime_ns, digest)


def change_in(then: InputIdentity) -> str | None:
    """What changed in the input since ``then`` was taken, or None if nothing did."""
    return difference(then, identify(Path(then.path)))


def difference(then: InputIdentity, now: InputIdentity) -> str | None:
    """How ``now`` differs from ``then``, in words, or None if it does not."""
    if now.size != then.size:
        return f"size {then.size} -> {now.size} bytes"
    if now.mtime_ns != then.mtime_ns:
        return "modification time"
    if now.fingerprint != then.fingerprint:
        return "contents"
    return None


@dataclass(frozen=True, slots=True)
class Planned:
    """What planning found: the input, its units, its index and its item count."""

    identity: InputIdentity
    units: tuple[UnitPlan, ...]
    index: LineIndex
    total_items: int


def index_gap(size: int) -> int:
    """Bytes between index points: fine for small inputs, bounded in count for large ones."""
    return max(MIN_INDEX_GAP, -(-size // INDEX_POINTS))


def plan(path: Path, workers: int, fmt: str = "text") -> Planned:
    """Identify the input, count and index its items, and cut it into ``workers`` units."""
    identity = identify(path)
    with path.open("rb") as fh:
        return plan_open(identity, fh, workers, fmt)


def plan_open(identity: InputIdentity, fh: BinaryIO, workers: int, fmt: str) -> Planned:
    """:func:`plan` over an open input (a local file or a buffered URL reader).

    UTF-16 and UTF-32 inputs are refused; a UTF-8 byte-order mark is skipped (the first
    item starts after it).
    """
    size = identity.size
    gap = index_gap(size)
    index_targets = list(range(gap, size, gap))
    unit_targets = [size * k // workers for k in range(1, workers)]
    head = fh.read(SAMPLE)
    refuse_wide(head, identity.path)
    targets = sorted({*index_targets, *unit_targets})
    found, total = scan(fh, size, targets, items_for(fmt), bom_length(head))
    points = _columns([(0, 0), *(found[t] for t in index_targets)], size)
    index = LineIndex(*points, fingerprint=identity.fingerprint)
    starts = _columns([(0, 0), *(found[t] for t in unit_targets)], size)
    units = tuple(UnitPlan(k, o, i) for k, (o, i) in enumerate(zip(*starts, strict=True)))
    return Planned(identity, units, index, total)


def _columns(
    points: Sequence[tuple[int, int]], size: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Distinct points before the end of the input, as an offsets column and an indexes one."""
    kept = sorted({p for p in points if p[0] < size or p[0] == 0})
    return tuple(o for o, _ in kept), tuple(i for _, i in kept)


def scan(
    fh: BinaryIO, size: int, targets: Sequence[int], kind: Items, skip: int = 0
) -> tuple[dict[int, tuple[int, int]], int]:
    """For each target offset, the first line start at or after it and the item index there.

    ``targets`` ascend. A target past the last line start maps to ``(size, total)``.
    Items are found as ``kind`` finds them (so the reader agrees), from byte ``skip`` on.
    Returns the map and the total number of items.
    """
    found: dict[int, tuple[int, int]] = {}
    pending = iter(targets)
    target = next(pending, None)
    items = 0
    for base, block in _whole_lines(fh, size, kind, skip):
        position = 0  # within block: items counts the lines of block[:position]
        while target is not None and (cut := _line_start(block, base, target)) is not None:
            items += kind.count(block[position : cut - base])
            position = cut - base
            # Every target up to the line start found maps to it: a long line is searched once.
            while target is not None and target <= cut:
                found[target] = (cut, items)
                target = next(pending, None)
        items += kind.count(block[position:])
    while target is not None:
        found[target] = (size, items)
        target = next(pending, None)
    return found, items


def _line_start(block: bytes, base: int, target: int) -> int | None:
    """The first line start at or after ``target`` inside ``block`` (or just past it).

    Line starts are found after ``\\n`` only, and at ``block``'s own start (an item
    boundary: :func:`_whole_lines` cuts only there).
    """
    if target <= base:
        return base
    newline = block.find(b"\n", target - 1 - base)
    return None if newline < 0 else base + newline + 1


def _whole_lines(fh: BinaryIO, size: int, kind: Items, skip: int) -> Iterator[tuple[int, bytes]]:
    """Bytes ``[skip, size)`` as blocks ending at item boundaries, with their offsets.

    The last block may end anywhere (the input's end).
    """
    fh.seek(skip)
    base, carry, remaining = skip, b"", size - skip
    while remaining > 0:
        chunk = fh.read(min(CHUNK, remaining))
        if not chunk:
            break
        remaining -= len(chunk)
        block = carry + chunk
        cut = kind.last_cut(block)
        if cut:
            yield base, block[:cut]
            base, carry = base + cut, block[cut:]
        else:
            carry = block
    if carry:
        yield base, carry
