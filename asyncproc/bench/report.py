"""Showing a bench: a rich table, the JSON document, and an optional matplotlib plot."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console
from rich.table import Table

from .._errors import ConfigError
from .durability import Durability
from .measure import LevelResult

PLOT_HINT = "--plot needs matplotlib; install it with: pip install 'asyncproc[plot]'"


def document(
    processor: str, loop: str, levels: Sequence[LevelResult], knee: int,
    durability: Durability | None,
) -> dict[str, Any]:  # fmt: skip
    """The ``--json`` output."""
    return {
        "processor": processor,
        "loop": loop,
        "levels": [level.to_dict() for level in levels],
        "knee": knee,
        "recommended_concurrency": knee,
        "durability": durability.to_dict() if durability else None,
    }


def level_table(levels: Sequence[LevelResult], knee: int, limit_ms: float = 0.0) -> Table:
    """One row per level; a p99 over ``limit_ms`` is marked: that level is not the knee."""
    table = Table(
        title="asyncproc bench: throughput by concurrency",
        caption=f"p99 limit for the knee: {limit_ms:.2f} ms" if limit_ms else None,
    )
    for name in ("concurrency", "items/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors"):
        table.add_column(name, justify="right")
    for level in levels:
        mark = " <- knee" if level.concurrency == knee else ""
        over = " (over)" if limit_ms and level.p99_ms > limit_ms else ""
        table.add_row(
            f"{level.concurrency}{mark}", f"{level.items_per_s:,.0f}", f"{level.p50_ms:.2f}",
            f"{level.p95_ms:.2f}", f"{level.p99_ms:.2f}{over}", f"{level.max_ms:.2f}",
            f"{level.error_rate:.1%}",
        )  # fmt: skip
    return table


def durability_table(durability: Durability) -> Table:
    table = Table(
        title="cost of durability",
        caption=f"{durability.items:,} items at concurrency {durability.concurrency}, medians "
        f"of {durability.repeats} alternating runs; checkpoints off: "
        f"{durability.off_items_per_s:,.0f} items/s",
    )
    for name in ("batch size", "items/s", "vs checkpoints off", "noise"):
        table.add_column(name, justify="right")
    for row in durability.rows:
        verdict = " (within noise)" if row.within_noise else ""
        table.add_row(str(row.batch_size), f"{row.items_per_s:,.0f}",
                      f"{row.ratio:.2f}x{verdict}", f"±{row.noise:.0%}")  # fmt: skip
    return table


def show(
    levels: Sequence[LevelResult], knee: int, durability: Durability | None,
    limit_ms: float = 0.0,
) -> None:  # fmt: skip
    console = Console()
    console.print(level_table(levels, knee, limit_ms))
    if durability is not None:
        console.print(durability_table(durability))
        if any(row.within_noise for row in durability.rows):
            console.print("a difference marked 'within noise' is smaller than the runs of that "
                          "configuration varied: it is no measured cost (or gain)")  # fmt: skip
    console.print(f"knee: concurrency {knee}; recommended: --concurrency {knee}")
    if levels and knee == max(level.concurrency for level in levels):
        console.print("the knee is the highest level tried; try higher levels to find the top")


def require_matplotlib() -> ModuleType:
    """Import matplotlib with a file-only backend, or fail with the install hint."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        raise ConfigError(PLOT_HINT) from None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def plot(levels: Sequence[LevelResult], knee: int, path: Path) -> None:
    """Throughput and p99 latency against concurrency (log scale), the knee marked."""
    plt = require_matplotlib()
    x = [level.concurrency for level in levels]
    fig, left = plt.subplots(figsize=(8, 5))
    left.set_xscale("log", base=2)
    left.plot(x, [level.items_per_s for level in levels], "o-", color="tab:blue")
    left.set_xlabel("concurrency")
    left.set_ylabel("items/s", color="tab:blue")
    right = left.twinx()
    right.plot(x, [level.p99_ms for level in levels], "s--", color="tab:red")
    right.set_ylabel("p99 latency (ms)", color="tab:red")
    left.axvline(knee, color="gray", linestyle=":", label=f"knee {knee}")
    left.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
