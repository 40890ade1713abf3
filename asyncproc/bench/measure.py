"""``asyncproc bench``: measure a processor at several concurrency levels, find the knee.

The pure part (levels, percentiles, the knee) is plain functions; the measuring part runs
each level on the engine's own lane loop (:mod:`.level`), timing each call with
:func:`time.perf_counter`. No retry, ordering or checkpoint sits between the lanes and
the function, so the numbers are the function's on the loop a run uses.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .._errors import ConfigError
from ..engine.pipeline import Pipeline
from .level import BenchLevel

KNEE_FRACTION = 0.9
MAX_LEVEL = 1_000_000
BLOWN_UP = 3.0  # without --slo-p99, a p99 over 3x the best level's p99 has blown up
MIN_LIMIT_MS = 1.0  # ... and over the best p99 plus this (sub-millisecond noise is fine)

Call = Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class LevelResult:
    """What one concurrency level measured; ``items_per_s`` counts successful items."""

    concurrency: int
    items: int
    errors: int
    elapsed_s: float
    items_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    error_rate: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Budget:
    """How long each level runs: a number of items, or a number of seconds."""

    items: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if (self.items is None) == (self.seconds is None):
            raise ConfigError("give exactly one of --items and --duration")
        if self.items is not None and self.items < 1:
            raise ConfigError(f"--items must be at least 1, got {self.items}")
        if self.seconds is not None and not self.seconds > 0:
            raise ConfigError(
                f"--duration must be a positive number of seconds, got {self.seconds}"
            )


# -- pure functions ----------------------------------------------------------------------


def parse_levels(text: str) -> list[int]:
    """``1,4,16`` is a list; ``1..1024x4`` is 1, 4, 16, ... up to 1024 (times 4 each step)."""
    text = text.strip()
    levels = _range_levels(text) if ".." in text else [_level(p) for p in text.split(",")]
    if not levels:
        raise ConfigError("--concurrency needs at least one level, e.g. 1,4,16 or 1..1024x4")
    return sorted(set(levels))


def _range_levels(text: str) -> list[int]:
    start_text, _, rest = text.partition("..")
    stop_text, sep, factor_text = rest.partition("x")
    start, stop = _level(start_text), _level(stop_text)
    factor = _level(factor_text) if sep else 2
    if factor < 2 or stop < start:
        raise ConfigError(
            f"--concurrency range {text!r} needs START..STOPxFACTOR with STOP >= START "
            "and FACTOR >= 2, e.g. 1..1024x4"
        )
    levels = [start]
    while levels[-1] * factor <= stop:
        levels.append(levels[-1] * factor)
    return levels


def _level(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ConfigError(
            f"--concurrency level {text.strip()!r} is not a whole number; "
            "use a list like 1,4,16 or a range like 1..1024x4"
        ) from None
    if not 1 <= value <= MAX_LEVEL:
        raise ConfigError(f"--concurrency levels must be between 1 and {MAX_LEVEL}, got {value}")
    return value


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence; 0.0 when it is empty."""
    if not ordered:
        return 0.0
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def p99_limit(levels: Sequence[LevelResult], slo_p99_ms: float | None = None) -> float:
    """The p99 a level may have and still be the knee: the SLO given, else 3x the best."""
    if slo_p99_ms is not None:
        return slo_p99_ms
    best = min(level.p99_ms for level in levels)
    return max(BLOWN_UP * best, best + MIN_LIMIT_MS)


def find_knee(
    levels: Sequence[LevelResult], fraction: float = KNEE_FRACTION,
    slo_p99_ms: float | None = None,
) -> int:  # fmt: skip
    """The lowest concurrency reaching ``fraction`` of the best throughput, among the
    levels whose p99 latency is acceptable (:func:`p99_limit`): more throughput bought with
    a blown-up tail is not the knee. If no level is acceptable, the one with the best p99.
    """
    if not levels:
        raise ValueError("no levels measured")
    limit = p99_limit(levels, slo_p99_ms)
    fine = [level for level in levels if level.p99_ms <= limit]
    if not fine:
        return min(levels, key=lambda level: (level.p99_ms, level.concurrency)).concurrency
    best = max(level.items_per_s for level in fine)
    return min(level.concurrency for level in fine if level.items_per_s >= fraction * best)


def summarize(concurrency: int, latencies: list[float], errors: int, elapsed: float) -> LevelResult:
    """Turn one level's raw timings (seconds) into its result row (milliseconds)."""
    ordered = sorted(latencies)
    done = len(ordered)
    ok = done - errors

    def ms(q: float) -> float:
        return round(percentile(ordered, q) * 1000, 3)

    return LevelResult(
        concurrency=concurrency, items=done, errors=errors, elapsed_s=round(elapsed, 4),
        items_per_s=round(ok / elapsed, 1) if elapsed > 0 else 0.0,
        p50_ms=ms(50), p95_ms=ms(95), p99_ms=ms(99), max_ms=ms(100),
        error_rate=round(errors / done, 4) if done else 0.0,
    )  # fmt: skip


# -- measuring ---------------------------------------------------------------------------


async def measure_level(
    pipeline: Pipeline, items: Sequence[Any], concurrency: int, budget: Budget
) -> LevelResult:
    """Run ``items`` (cycled) through ``pipeline``'s call on ``concurrency`` lanes
    (:class:`.level.BenchLevel`); time every call."""
    if not items:
        raise ConfigError("the bench has no items; give a non-empty --input or --synthetic N")
    level = BenchLevel(pipeline, items, concurrency, budget.items, budget.seconds)
    elapsed = await level.measure()
    return summarize(concurrency, level.latencies, level.errors, elapsed)


async def sweep(
    pipeline: Pipeline,
    items: Sequence[Any],
    levels: Sequence[int],
    budget: Budget,
    on_level: Callable[[LevelResult], None] | None = None,
) -> list[LevelResult]:
    """Measure every level in turn, lowest first."""
    results = []
    for concurrency in levels:
        result = await measure_level(pipeline, items, concurrency, budget)
        if on_level is not None:
            on_level(result)
        results.append(result)
    return results
