"""Alternated contenders and medians of their ratios, shared by the benchmarks.

Each contender runs once per repeat, in turn, so the machine's drift hits them alike;
a ratio is the median of the per-repeat ratios, not the ratio of two medians.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

Contenders = dict[str, Callable[[], float]]


def alternate(
    contenders: Contenders, repeats: int, log: Callable[[str], None]
) -> dict[str, list[float]]:
    """Items/s of each contender, one run per repeat, in turn."""
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for repeat in range(repeats):
        for name, run in contenders.items():
            rates[name].append(run())
            log(f"repeat {repeat + 1}: {name}: {rates[name][-1]:,.0f} items/s")
    return rates


def ratio(rates: dict[str, list[float]], top: str, bottom: str) -> float:
    """The median of ``top / bottom`` over the repeats."""
    pairs = zip(rates[top], rates[bottom], strict=True)
    return statistics.median(a / b for a, b in pairs)
