"""The cost of durability: the full engine with checkpoints at several batch sizes,
against the same engine with checkpoints off (:class:`~._volatile.VolatileShardStore`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import anyio

from .._api import process_file
from ..engine.processors import Fn
from .sample import Sample

BATCH_SIZES = (1, 10, 100, 1000)
MIN_ITEMS, MAX_ITEMS = 200, 50_000
SECONDS_PER_RUN = 0.5


@dataclass(frozen=True, slots=True)
class DurabilityRow:
    """One batch size: throughput with checkpoints, and its ratio to checkpoints off."""

    batch_size: int
    items_per_s: float
    ratio: float


@dataclass(frozen=True, slots=True)
class Durability:
    """Every engine run of the comparison."""

    concurrency: int
    items: int
    off_items_per_s: float
    rows: tuple[DurabilityRow, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def items_for(best_items_per_s: float) -> int:
    """Enough items for about half a second per engine run, within bounds."""
    return int(min(MAX_ITEMS, max(MIN_ITEMS, best_items_per_s * SECONDS_PER_RUN)))


def _write_input(directory: Path, sample: Sample, count: int) -> Path:
    path = directory / f"input.{'jsonl' if sample.format == 'jsonl' else 'txt'}"
    path.write_bytes(b"".join(line + b"\n" for line in islice(cycle(sample.lines), count)))
    return path


async def _timed(fn: Fn, path: Path, concurrency: int, batch_size: int, durable: bool) -> float:
    """Items per second of one whole engine run, planning and merge included."""
    output = path.with_name("output.jsonl")
    started = time.perf_counter()
    summary = await process_file(
        path, output, fn, concurrency=concurrency, batch_size=batch_size, durable=durable,
        checkpoint_dir=path.parent / "runs", new_run=True, quiet=True,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    await anyio.Path(output).unlink()
    return round(summary.processed / elapsed, 1) if elapsed > 0 else 0.0


async def durability_cost(
    fn: Fn, sample: Sample, concurrency: int, count: int,
    batch_sizes: Sequence[int] = BATCH_SIZES,
) -> Durability:  # fmt: skip
    """Checkpoints off (measured first and last, averaged), then each batch size."""
    with tempfile.TemporaryDirectory(prefix="asyncproc-bench-") as tmp:
        path = await anyio.to_thread.run_sync(_write_input, Path(tmp), sample, count)
        first = await _timed(fn, path, concurrency, max(batch_sizes), durable=False)
        timed = [await _timed(fn, path, concurrency, b, durable=True) for b in batch_sizes]
        last = await _timed(fn, path, concurrency, max(batch_sizes), durable=False)
    off = (first + last) / 2
    rows = tuple(
        DurabilityRow(b, ips, round(ips / off, 3) if off else 0.0)
        for b, ips in zip(batch_sizes, timed, strict=True)
    )
    return Durability(concurrency, count, round(off, 1), rows)
