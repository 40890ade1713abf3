"""``asyncproc bench --auto``: what ``--concurrency auto`` settles on, beside the knee.

The same processor through the whole engine (checkpoints off) with the adaptive limit
capped at the highest level measured, for about two seconds of work at the best rate
measured: the limit it ended at and its throughput, to set against the knee's.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio

from .._api import process_file
from ..processors.loading import Fn
from .durability import _write_input
from .sample import Sample

SECONDS = 2.0
MIN_ITEMS, MAX_ITEMS = 200, 200_000


@dataclass(frozen=True, slots=True)
class AutoResult:
    """Where the adaptive limit ended, and what it achieved."""

    maximum: int
    items: int
    concurrency_limit: int
    items_per_s: float
    rejected: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def auto_limit(fn: Fn, sample: Sample, maximum: int, best_items_per_s: float) -> AutoResult:
    count = int(min(MAX_ITEMS, max(MIN_ITEMS, best_items_per_s * SECONDS)))
    with tempfile.TemporaryDirectory(prefix="asyncproc-bench-") as tmp:
        path = await anyio.to_thread.run_sync(_write_input, Path(tmp), sample, count)
        started = time.perf_counter()
        summary = await process_file(
            path, path.with_name("output.jsonl"), fn, concurrency="auto",
            max_concurrency=maximum, durable=False, checkpoint_dir=Path(tmp) / "runs",
            new_run=True, quiet=True,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
    rate = round(summary.processed / elapsed, 1) if elapsed > 0 else 0.0
    return AutoResult(maximum, count, summary.concurrency_limit or 0, rate, summary.rejected)
