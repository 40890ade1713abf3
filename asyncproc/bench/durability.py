"""The cost of durability: the full engine with checkpoints at several batch sizes,
against the same engine with checkpoints off (``durable=False``).

Each configuration runs ``repeats`` times, in rounds whose order alternates (checkpoints
off, then each batch size; the next round backwards), so a machine that speeds up or
slows down over the measurement weighs on every configuration alike. A row's ratio is the
ratio of medians; its *noise* is how far that configuration's own runs, and the runs
with checkpoints off, strayed from their medians. A difference smaller than the noise is
reported as such: a table that shows checkpoints faster than none is showing noise.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import anyio

from .._api import process_file
from ..processors.loading import Fn
from .sample import Sample

BATCH_SIZES = (1, 10, 100, 1000)
MIN_ITEMS, MAX_ITEMS = 200, 50_000
SECONDS_PER_RUN = 0.3
REPEATS = 3
OFF = 0  # the configuration with checkpoints off, among the batch sizes


@dataclass(frozen=True, slots=True)
class DurabilityRow:
    """One batch size: throughput with checkpoints, and its ratio to checkpoints off."""

    batch_size: int
    items_per_s: float  # median of the repeats
    ratio: float  # of the medians
    noise: float  # relative: how far this row's and the off runs strayed from their medians
    within_noise: bool  # |ratio - 1| is no larger than the noise


@dataclass(frozen=True, slots=True)
class Durability:
    """Every engine run of the comparison."""

    concurrency: int
    items: int
    off_items_per_s: float
    rows: tuple[DurabilityRow, ...]
    repeats: int = REPEATS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def items_for(best_items_per_s: float) -> int:
    """Enough items for about a third of a second per engine run, within bounds."""
    return int(min(MAX_ITEMS, max(MIN_ITEMS, best_items_per_s * SECONDS_PER_RUN)))


def _write_input(directory: Path, sample: Sample, count: int) -> Path:
    path = directory / f"input.{'jsonl' if sample.format == 'jsonl' else 'txt'}"
    path.write_bytes(b"".join(line + b"\n" for line in islice(cycle(sample.lines), count)))
    return path


async def _timed(fn: Fn, path: Path, concurrency: int, batch_size: int) -> float:
    """Items per second of one whole engine run, planning and merge included."""
    output = path.with_name("output.jsonl")
    durable = batch_size != OFF
    started = time.perf_counter()
    summary = await process_file(
        path, output, fn, concurrency=concurrency, batch_size=batch_size if durable else 1000,
        durable=durable, checkpoint_dir=path.parent / "runs", new_run=True, quiet=True,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    await anyio.Path(output).unlink()
    return round(summary.processed / elapsed, 1) if elapsed > 0 else 0.0


def _order(batch_sizes: Sequence[int], round_: int) -> list[int]:
    forward = [OFF, *batch_sizes]
    return forward if round_ % 2 == 0 else forward[::-1]


def _spread(values: list[float]) -> float:
    """Half the range, relative to the median: 0.05 is +-5%."""
    middle = statistics.median(values)
    return (max(values) - min(values)) / 2 / middle if middle > 0 else 0.0


async def durability_cost(
    fn: Fn, sample: Sample, concurrency: int, count: int,
    batch_sizes: Sequence[int] = BATCH_SIZES, repeats: int = REPEATS,
) -> Durability:  # fmt: skip
    """Checkpoints off and each batch size, ``repeats`` alternating rounds of each."""
    runs: dict[int, list[float]] = {b: [] for b in (OFF, *batch_sizes)}
    with tempfile.TemporaryDirectory(prefix="asyncproc-bench-") as tmp:
        path = await anyio.to_thread.run_sync(_write_input, Path(tmp), sample, count)
        for round_ in range(repeats):
            for batch_size in _order(batch_sizes, round_):
                runs[batch_size].append(await _timed(fn, path, concurrency, batch_size))
    off = statistics.median(runs[OFF])
    return Durability(concurrency, count, round(off, 1),
                      tuple(_row(b, runs[b], runs[OFF]) for b in batch_sizes), repeats)  # fmt: skip


def _row(batch_size: int, mine: list[float], off: list[float]) -> DurabilityRow:
    median, off_median = statistics.median(mine), statistics.median(off)
    ratio = round(median / off_median, 3) if off_median else 0.0
    noise = round(max(_spread(mine), _spread(off)), 3)
    return DurabilityRow(batch_size, round(median, 1), ratio, noise, abs(ratio - 1) <= noise)
