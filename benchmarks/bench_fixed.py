"""Issue 22's fixed costs, measured from outside against the strongest simple program.

Each contender is a whole process (interpreter start, imports, planning, checkpoints and
the merge included), timed from here around spawn to exit, its peak RSS read by GNU
``time``, after one unmeasured warm-up each (bytecode cached, as a pip install has it).
The baseline is ``../shared/baselines/bare_pool.py`` (a worker pool fed by a bounded
queue, a reorder buffer, batched writes, no checkpoints), run on the same loop as
asyncproc: asyncio on both sides, then uvloop on both (the baseline through a shim that
installs uvloop's policy before running it unchanged). Contenders alternate within each
repeat; the table shows medians and the median of the per-repeat ratios. Both write
``{"index": i, **result}`` lines, and their outputs are compared byte for byte.

Cases (``--only``):

* ``noop``: 200,000 no-op items at concurrency 64 (target >= 0.9x the baseline's rate);
* ``sleep``: 100,000 items of 10 ms at concurrency 1000 (target >= 0.95x);
* ``tiny``: a 10-item run, wall time of the whole process (target <= 0.2 s);
* ``rss``: peak RSS of the no-op job at 200,000 and 2,000,000 items (target <= 1.3x, flat).

Usage: ``python benchmarks/bench_fixed.py [--repeats 5] [--only noop,tiny] [--scale 0.1]
[--loops asyncio,uvloop] [--baseline PATH]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _alternate import ratio

HERE = Path(__file__).resolve().parent
WORK = HERE / "_fixed_work.py"
DEFAULT_BASELINE = HERE.parent.parent / "shared" / "baselines" / "bare_pool.py"
UVLOOP_SHIM = (
    "import asyncio, runpy, sys, uvloop; "
    "asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


@dataclass(frozen=True)
class Case:
    name: str
    items: int
    processor: str
    concurrency: int
    target: str


@dataclass(frozen=True)
class Measured:
    seconds: float
    rss_mib: float


CASES = {
    "noop": [Case("noop", 200_000, "noop", 64, ">= 0.9x")],
    "sleep": [Case("10 ms sleep", 100_000, "sleep10", 1000, ">= 0.95x")],
    "tiny": [Case("tiny run", 10, "noop", 64, "<= 0.2 s")],
    "rss": [
        Case("RSS", 200_000, "noop", 64, "<= 1.3x"),
        Case("RSS", 2_000_000, "noop", 64, "<= 1.3x, flat"),
    ],
}


def log(message: str) -> None:
    sys.stderr.write(f"[fixed] {message}\n")
    sys.stderr.flush()


def make_input(folder: Path, items: int) -> Path:
    path = folder / f"in_{items}.txt"
    if not path.exists():
        with path.open("w") as out:
            out.writelines(f"item {i:08d} of the fixed-cost benchmark\n" for i in range(items))
    return path


# As installed by pip, with bytecode cached: without it every start compiles asyncproc's
# modules from source (about 0.1 s here), which no installed copy pays.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


# A child spawned from this process inherits its peak RSS (Linux counts the memory a
# vfork child shares until exec), so peaks come from GNU time, a small process of its own.
GNU_TIME = shutil.which("time", path="/usr/bin:/bin")


def timed(argv: list[str], errors: Path) -> Measured:
    """Wall time and peak RSS of one whole process."""
    peak = errors.with_suffix(".rss")
    wrapped = [GNU_TIME, "-f", "%M", "-o", str(peak), *argv] if GNU_TIME else argv
    with errors.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.run(wrapped, stdout=subprocess.DEVNULL, stderr=err, env=CHILD_ENV)
        elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:4]} exited {proc.returncode}: {errors.read_text()[-2000:]}")
    rss_kib = int(peak.read_text().split()[-1]) if GNU_TIME else 0
    return Measured(elapsed, rss_kib / 1024)


def asyncproc_argv(case: Case, loop: str, inp: Path, out: Path, ck: Path) -> list[str]:
    script = Path(sys.executable).with_name("asyncproc")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "asyncproc"]
    return [
        *head, "run", "--input", str(inp), "--output", str(out),
        "--processor", f"{WORK}:{case.processor}", "--concurrency", str(case.concurrency),
        "--checkpoint", str(ck), "--loop", loop, "--quiet",
    ]  # fmt: skip


def bare_argv(case: Case, loop: str, baseline: Path, inp: Path, out: Path) -> list[str]:
    args = [str(baseline), str(inp), str(out), f"{WORK}:{case.processor}", str(case.concurrency)]
    if loop == "uvloop":
        return [sys.executable, "-c", UVLOOP_SHIM, *args]
    return [sys.executable, *args]


def measure_case(
    case: Case, loop: str, baseline: Path, folder: Path, repeats: int
) -> dict[str, list[Measured]]:
    """Both contenders, alternated; their outputs compared after the first repeat."""
    inp = make_input(folder, case.items)
    outs = {"asyncproc": folder / "asyncproc.jsonl", "bare": folder / "bare.jsonl"}
    ck = folder / "ck"
    runs: dict[str, list[Measured]] = {"asyncproc": [], "bare": []}
    for repeat in range(-1, repeats):  # -1: a warm-up that fills the bytecode caches
        for out in outs.values():
            out.unlink(missing_ok=True)
        shutil.rmtree(ck, ignore_errors=True)
        argvs = {
            "asyncproc": asyncproc_argv(case, loop, inp, outs["asyncproc"], ck),
            "bare": bare_argv(case, loop, baseline, inp, outs["bare"]),
        }
        for name, argv in argvs.items():
            got = timed(argv, folder / "stderr.txt")
            if repeat < 0:
                continue
            runs[name].append(got)
            log(f"{case.name} [{loop}] repeat {repeat + 1}: {name} {got.seconds:.3f} s, "
                f"{got.rss_mib:.1f} MiB")  # fmt: skip
        if repeat < 0 and outs["asyncproc"].read_bytes() != outs["bare"].read_bytes():
            raise SystemExit(f"{case.name}: the outputs differ; the comparison is void")
    return runs


def row(case: Case, loop: str, runs: dict[str, list[Measured]]) -> str:
    rates = {n: [case.items / m.seconds for m in ms] for n, ms in runs.items()}
    rss = {n: [m.rss_mib for m in ms] for n, ms in runs.items()}
    ours = statistics.median(m.seconds for m in runs["asyncproc"])
    bare = statistics.median(m.seconds for m in runs["bare"])
    return (
        f"| {case.name}, {case.items:,} items @{case.concurrency} | {loop} "
        f"| {ours:.3f} s | {bare:.3f} s "
        f"| {ratio(rates, 'asyncproc', 'bare'):.2f}x "
        f"| {statistics.median(rss['asyncproc']):.1f} / {statistics.median(rss['bare']):.1f} MiB "
        f"| {ratio(rss, 'asyncproc', 'bare'):.2f}x | {case.target} |"
    )


HEADER = (
    "| case | loop | asyncproc | bare pool | speed ratio | peak RSS | RSS ratio | target |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- |"
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default="noop,sleep,tiny,rss")
    parser.add_argument("--loops", default="asyncio,uvloop")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the item counts")
    parser.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE)
    return parser.parse_args()


def scaled(case: Case, scale: float) -> Case:
    if case.items <= 10:
        return case
    items = max(1000, int(case.items * scale))
    return Case(case.name, items, case.processor, case.concurrency, case.target)


def main() -> None:
    args = parse_args()
    if GNU_TIME is None:
        log("no /usr/bin/time (Debian package time): peak RSS is not measured")
    if not args.baseline.is_file():
        raise SystemExit(f"no baseline at {args.baseline}; pass --baseline PATH/bare_pool.py")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_fixed_") as tmp:
        for name in args.only.split(","):
            for case in (scaled(c, args.scale) for c in CASES[name]):
                loops = ["asyncio"] if name == "rss" else args.loops.split(",")
                for loop in loops:
                    runs = measure_case(case, loop, args.baseline, Path(tmp), args.repeats)
                    rows.append(row(case, loop, runs))
    print(f"medians of {args.repeats} alternated runs; ratios are asyncproc / bare pool")
    print(HEADER)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
