"""``asyncproc bench``: the click layer over :mod:`._bench`, registered on ``cli``.

The report module (rich's console, matplotlib) is imported only when a bench runs, so
registering the command costs ``asyncproc run`` no start-up time.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import click
import orjson

from .._errors import ConfigError
from .._options import format_for
from ..bench.auto import AutoResult, auto_limit
from ..bench.durability import Durability, durability_cost, items_for
from ..bench.measure import Budget, LevelResult, find_knee, p99_limit, parse_levels, sweep
from ..bench.sample import Sample, load_sample, synthetic
from ..engine.loops import LoopChoice, backend_options, running_loop
from ..engine.pipeline import OBJECTS, Pipeline
from ..processors.loading import Processor, load_processor
from .group import format_option, processor_arg_option

DEFAULT_LEVELS = "1,4,16,64,256,1024"


@dataclass(frozen=True, slots=True)
class BenchRequest:
    """Everything the bench command was asked, checked before any measuring."""

    processor: Processor
    sample: Sample
    levels: list[int]
    budget: Budget
    durability: bool
    durability_items: int | None
    quiet: bool
    auto: bool = False
    slo_p99_ms: float | None = None
    durability_repeats: int = 3


@dataclass(frozen=True, slots=True)
class BenchResult:
    """What a bench measured, and on which loop."""

    levels: list[LevelResult]
    knee: int
    durability: Durability | None
    loop: str
    auto: AutoResult | None = None
    p99_limit_ms: float = 0.0  # the p99 a level could have and still be the knee


def _sample(input_path: Path | None, count: int | None, fmt: str | None) -> Sample:
    if (input_path is None) == (count is None):
        raise ConfigError("give exactly one of --input PATH and --synthetic N")
    if input_path is not None:
        return load_sample(input_path, fmt or format_for(input_path).value)
    return synthetic(count or 0)


def _budget(items: int | None, duration: float | None) -> Budget:
    if items is None and duration is None:
        return Budget(seconds=3.0)
    return Budget(items, duration)


def _pipeline(req: BenchRequest) -> Pipeline:
    """Items decoded already, results not kept; a sync processor gets as many threads as
    the highest level."""
    return Pipeline(
        req.processor, format=OBJECTS, output_kind=OBJECTS, retries=0,
        timeout=None, threads=max(req.levels), timed=True,
    )  # fmt: skip


def _report_level(quiet: bool) -> Callable[[LevelResult], None]:
    def report(level: LevelResult) -> None:
        if not quiet:
            sys.stderr.write(
                f"asyncproc: concurrency {level.concurrency}: {level.items_per_s:,.0f} items/s, "
                f"p99 {level.p99_ms:.1f} ms\n"
            )

    return report


async def _measure(req: BenchRequest) -> BenchResult:
    with _pipeline(req) as pipeline:
        report = _report_level(req.quiet)
        levels = await sweep(pipeline, req.sample.items, req.levels, req.budget, report)
    knee = find_knee(levels, slo_p99_ms=req.slo_p99_ms)
    cost = await _durability(req, levels, knee) if req.durability else None
    auto = None
    if req.auto:
        best = max(level.items_per_s for level in levels)
        auto = await auto_limit(req.processor.fn, req.sample, max(req.levels), best)
    p99 = p99_limit(levels, req.slo_p99_ms)
    return BenchResult(levels, knee, cost, running_loop(), auto, p99)


async def _durability(req: BenchRequest, levels: list[LevelResult], knee: int) -> Durability:
    best = max(level.items_per_s for level in levels)
    count = req.durability_items or items_for(best)
    if not req.quiet:
        sys.stderr.write(f"asyncproc: cost of durability: {count} items through the engine\n")
    return await durability_cost(
        req.processor.fn, req.sample, knee, count, repeats=req.durability_repeats
    )


@click.command(name="bench")
@click.option(
    "--processor", required=True, help="Built-in name, module:function or file.py:function."
)
@processor_arg_option
@click.option(
    "--input", "input_path", type=click.Path(path_type=Path), help="A sample of real items."
)
@click.option("--synthetic", type=int, metavar="N", help="Bench on N generated items instead.")
@format_option
@click.option(
    "--concurrency", "levels", default=DEFAULT_LEVELS, show_default=True,
    help="Levels: a list (1,4,16) or START..STOPxFACTOR (1..1024x4 = 1,4,16,...,1024).",
)  # fmt: skip
@click.option("--items", type=int, help="Items per level.")
@click.option("--duration", type=float, help="Seconds per level [default: 3].")
@click.option(
    "--durability/--no-durability", default=True, show_default=True,
    help="Also time the full engine at batch sizes 1, 10, 100, 1000 vs checkpoints off.",
)  # fmt: skip
@click.option(
    "--durability-items", type=int, metavar="N", help="Items per engine run [default: auto]."
)
@click.option(
    "--auto", is_flag=True,
    help="Also run --concurrency auto (up to the highest level) and show where it settled.",
)  # fmt: skip
@click.option(
    "--durability-repeats", type=click.IntRange(min=2), default=3, show_default=True,
    metavar="N", help="Runs of each engine configuration, in alternating order.",
)  # fmt: skip
@click.option(
    "--slo-p99", "slo_p99", type=float, metavar="MS",
    help="The p99 latency a level may have and still be the knee [default: 3x the best p99].",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), help="Write a PNG plot.")
@click.option("--quiet", "-q", is_flag=True, help="No per-level lines on stderr.")
@click.option(
    "--loop", type=click.Choice([c.value for c in LoopChoice]), default="auto",
    show_default=True, help="Event loop: auto = uvloop when installed.",
)  # fmt: skip
def bench_command(
    processor: str, processor_args: dict[str, str], input_path: Path | None,
    synthetic: int | None, fmt: str | None, levels: str, items: int | None,
    duration: float | None, durability: bool, durability_items: int | None,
    durability_repeats: int, slo_p99: float | None, as_json: bool, plot_path: Path | None,
    quiet: bool, loop: str, auto: bool,
) -> None:  # fmt: skip
    """Measure PROCESSOR at several concurrency levels; find the knee."""
    if plot_path is not None:
        from ..bench.report import require_matplotlib

        require_matplotlib()
    if durability_items is not None and durability_items < 1:
        raise ConfigError(f"--durability-items must be at least 1, got {durability_items}")
    if slo_p99 is not None and not slo_p99 > 0:
        raise ConfigError(f"--slo-p99 must be a positive number of milliseconds, got {slo_p99}")
    req = BenchRequest(
        processor=load_processor(processor, processor_args),
        sample=_sample(input_path, synthetic, fmt), levels=parse_levels(levels),
        budget=_budget(items, duration), durability=durability,
        durability_items=durability_items, quiet=quiet, auto=auto, slo_p99_ms=slo_p99,
        durability_repeats=durability_repeats,
    )  # fmt: skip
    result = anyio.run(_measure, req, backend_options=backend_options(loop))
    _output(req.processor.spec, result, as_json, plot_path)


def _output(spec: str, result: BenchResult, as_json: bool, plot_path: Path | None) -> None:
    from ..bench.report import document, plot, show

    if plot_path is not None:
        plot(result.levels, result.knee, plot_path)
    if as_json:
        doc = document(spec, result.loop, result.levels, result.knee, result.durability)
        doc["auto"] = result.auto.to_dict() if result.auto else None
        doc["p99_limit_ms"] = round(result.p99_limit_ms, 3)
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        sys.stdout.flush()
    else:
        show(result.levels, result.knee, result.durability, result.p99_limit_ms)
        if result.auto is not None:
            a = result.auto
            sys.stdout.write(
                f"--concurrency auto (up to {a.maximum}) settled at {a.concurrency_limit}: "
                f"{a.items_per_s:,.0f} items/s, {a.rejected} rejected; the knee was {result.knee}\n"
            )
