"""The items a bench runs on: a sample of a real input, or generated ones."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

from .._errors import InputError
from ..engine.encode import decoder_for
from ..engine.items import bom_length, items_for, refuse_wide
from ..engine.planning import check_input

SAMPLE_LIMIT = 100_000
CHUNK = 1 << 18


@dataclass(frozen=True, slots=True)
class Sample:
    """Raw non-blank lines (for the engine runs) and their decoded items (for the sweep)."""

    format: str
    lines: list[bytes]
    items: list[Any]


def synthetic(count: int) -> Sample:
    """``count`` text items ``item-0``, ``item-1``, ... for processors that ignore them."""
    if count < 1:
        raise InputError(f"--synthetic must be at least 1, got {count}")
    lines = [f"item-{i}".encode() for i in range(count)]
    return Sample("text", lines, [line.decode() for line in lines])


def _raw_items(fh: BinaryIO, fmt: str, name: str) -> Iterator[bytes]:
    """Every item's raw bytes, cut exactly as a run cuts them (:mod:`..engine.items`)."""
    kind, pending = items_for(fmt), b""
    head = fh.read(CHUNK)
    refuse_wide(head, name)
    chunk = head[bom_length(head) :]
    while chunk:
        block = pending + chunk
        cut = kind.last_cut(block)
        yield from kind.split(block[:cut], 0)[1]
        pending = block[cut:]
        chunk = fh.read(CHUNK)
    yield from kind.split(pending, 0)[1]


def load_sample(path: Path, fmt: str, limit: int = SAMPLE_LIMIT) -> Sample:
    """The first ``limit`` items of ``path``, cut and decoded as the engine does it."""
    check_input(path)
    with path.open("rb") as fh:
        lines = list(islice(_raw_items(fh, fmt, str(path)), limit))
    if not lines:
        raise InputError(f"input {path} has no items; give a file with non-blank lines")
    decode = decoder_for(fmt)
    items = []
    for number, line in enumerate(lines, start=1):
        try:
            items.append(decode(line))
        except ValueError as exc:
            raise InputError(
                f"item {number} of {path} cannot be read as {fmt}: {exc}; "
                "check --format or the file"
            ) from None
    return Sample(fmt, lines, items)
