"""Planning: identify the input, cut it into shards on line boundaries, count items.

Plain blocking functions; the coordinator runs them in a worker thread. Planning reads
the whole input once (to count items, so every shard knows its first index); resuming
never does: it re-reads only the fixed samples of :func:`fingerprint`.
"""

from __future__ import annotations

import hashlib
import os
import re
from itertools import pairwise
from pathlib import Path
from typing import BinaryIO

from .._errors import InputError
from ..storage.records import InputIdentity, ShardPlan

CHUNK = 1 << 20
SAMPLE = 4096
SAMPLES = 16
# A blank line holds only what bytes.strip() removes.
_BLANK_LINE = re.compile(rb"^[ \t\r\x0b\x0c]*\n", re.MULTILINE)


def check_input(path: Path) -> os.stat_result:
    """Stat the input, turning every way it can be unusable into one InputError."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"input {path} does not exist; check the --input path") from None
    except OSError as exc:
        raise InputError(f"cannot read input {path}: {exc.strerror}") from exc
    if path.is_dir():
        raise InputError(f"input {path} is a directory; give a line-oriented file")
    if not os.access(path, os.R_OK):
        raise InputError(f"input {path} is not readable; check its permissions")
    return st


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
    now = identify(Path(then.path))
    if now.size != then.size:
        return f"size {then.size} -> {now.size} bytes"
    if now.mtime_ns != then.mtime_ns:
        return "modification time"
    if now.fingerprint != then.fingerprint:
        return "contents"
    return None


def cut_points(fh: BinaryIO, size: int, workers: int) -> list[int]:
    """Shard boundaries: each target moved forward to just past the next newline."""
    points = [0]
    for k in range(1, workers):
        point = _next_line_start(fh, size * k // workers, size)
        if points[-1] < point < size:
            points.append(point)
    points.append(size)
    return points


def _next_line_start(fh: BinaryIO, target: int, size: int) -> int:
    if target == 0:
        return 0
    fh.seek(target - 1)
    position = target - 1
    while position < size:
        block = fh.read(65536)
        newline = block.find(b"\n")
        if newline >= 0:
            return position + newline + 1
        position += len(block)
        if not block:
            break
    return size


def count_items(fh: BinaryIO, start: int, end: int) -> int:
    """Count non-blank lines in ``[start, end)``, whole lines at a time."""
    fh.seek(start)
    remaining, carry, items = end - start, b"", 0
    while remaining > 0:
        chunk = fh.read(min(CHUNK, remaining))
        if not chunk:
            break
        remaining -= len(chunk)
        block = carry + chunk
        cut = block.rfind(b"\n") + 1
        whole, carry = block[:cut], block[cut:]
        items += whole.count(b"\n") - len(_BLANK_LINE.findall(whole))
    return items + (1 if carry.strip() else 0)


def plan(path: Path, workers: int | None, auto: int) -> tuple[InputIdentity, tuple[ShardPlan, ...]]:
    """Identify the input and cut it into at most ``workers`` (or ``auto``) shards."""
    identity = identify(path)
    with path.open("rb") as fh:
        points = cut_points(fh, identity.size, workers or auto)
        shards, first = [], 0
        for shard_id, (start, end) in enumerate(pairwise(points)):
            items = count_items(fh, start, end)
            shards.append(ShardPlan(shard_id, start, end, first, items))
            first += items
    return identity, tuple(shards)
