"""Issue 5 throughput targets: uvloop, --processes, checkpoint cost, ``asyncproc bench``.

Every contender runs in a fresh process; only the job is timed (``perf_counter`` around
``asyncproc.run_file``, or the bare program's own timing). Contenders alternate within
each repeat, and the tables show medians and the median of the per-repeat ratios.

Scenarios (``--only``):

* ``sleep``: 100,000 items sleeping 10 ms at concurrency 1000. asyncproc on uvloop
  against the ideal 100,000 items/s (target >= 85%); asyncproc on asyncio against
  ``bare_asyncio.py`` on asyncio (target >= 0.9x).
* ``cpu``: 60,000 items each burning ~50 us of CPU; ``--processes 2`` against
  ``--processes 1`` (target >= 1.6x), next to a control: plain Python spinning in two
  processes against one, which shows how much of a second core the machine gives now.
* ``durable``: the ``sleep`` job at ``--batch-size 1000``, checkpoints on against off
  (target >= 0.95x).
* ``bench``: wall time of ``asyncproc bench`` over 6 levels with ``--duration 3``
  (target < 30 s).

Usage: ``python benchmarks/bench_throughput.py [--repeats 5] [--only sleep,cpu]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _alternate import alternate, ratio

HERE = Path(__file__).resolve().parent
MARKER = "THROUGHPUT "
SLEEP_ITEMS, CPU_ITEMS = 100_000, 60_000
BURN = f"{HERE / '_cpu_burn.py'}:burn"


def log(message: str) -> None:
    sys.stderr.write(f"[throughput] {message}\n")
    sys.stderr.flush()


# -- the timed child ----------------------------------------------------------------------


def child(spec: dict[str, Any]) -> None:
    """Run one asyncproc job in this process; print its rate."""
    import asyncproc

    options = dict(spec["options"])
    started = time.perf_counter()
    summary = asyncproc.run_file(spec["input"], spec["output"], spec["processor"], **options)
    elapsed = time.perf_counter() - started
    result = {"items_per_s": summary.processed / elapsed, "loop": summary.loop}
    print(MARKER + json.dumps(result), flush=True)


def _last_json(stdout: str, marker: str = "") -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.startswith(marker) and line.strip()]
    data: dict[str, Any] = json.loads(lines[-1][len(marker) :])
    return data


def asyncproc_rate(tmp: Path, inp: Path, processor: str, **options: Any) -> float:
    spec = {
        "input": str(inp), "output": str(tmp / "out.jsonl"), "processor": processor,
        "options": {"new_run": True, "quiet": True, "checkpoint_dir": str(tmp / "ck"), **options},
    }  # fmt: skip
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True, text=True, check=True, timeout=900,
    )  # fmt: skip
    return float(_last_json(proc.stdout, MARKER)["items_per_s"])


def bare_rate(tmp: Path, inp: Path) -> float:
    proc = subprocess.run(
        [sys.executable, str(HERE / "bare_asyncio.py"), "--input", str(inp),
         "--output", str(tmp / "bare.jsonl"), "--processor", "sleep",
         "--concurrency", "1000", "--latency", "0.01"],
        capture_output=True, text=True, check=True, timeout=900,
    )  # fmt: skip
    return float(_last_json(proc.stdout)["items_per_s"])


# -- scenarios ------------------------------------------------------------------------------


def write_input(path: Path, count: int) -> Path:
    path.write_text("".join(f"item-{i}\n" for i in range(count)))
    return path


def sleep_scenario(tmp: Path, repeats: int) -> list[dict[str, Any]]:
    inp = write_input(tmp / "sleep.txt", SLEEP_ITEMS)
    sleep = {"processor_args": {"latency": "0.01"}, "concurrency": 1000}
    rates = alternate(
        {
            "asyncproc uvloop": lambda: asyncproc_rate(tmp, inp, "sleep", loop="uvloop", **sleep),
            "asyncproc asyncio": lambda: asyncproc_rate(tmp, inp, "sleep", loop="asyncio", **sleep),
            "bare asyncio": lambda: bare_rate(tmp, inp),
        },
        repeats,
        log,
    )
    uv = statistics.median(rates["asyncproc uvloop"])
    return [
        row("uvloop vs ideal 100,000/s", uv / 100_000, 0.85, rates, "asyncproc uvloop"),
        row("asyncio vs bare asyncio", ratio(rates, "asyncproc asyncio", "bare asyncio"), 0.9,
            rates, "asyncproc asyncio", "bare asyncio"),
    ]  # fmt: skip


def _spin(count: int) -> None:
    total = 0
    for i in range(count):
        total += i


def spin_rate(processes: int) -> float:
    """Control: pure-Python spinning in ``processes`` processes, in spins per second."""
    import multiprocessing

    count = 10_000_000
    workers = [multiprocessing.Process(target=_spin, args=(count,)) for _ in range(processes)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return processes * count / (time.perf_counter() - started)


def cpu_scenario(tmp: Path, repeats: int) -> list[dict[str, Any]]:
    inp = write_input(tmp / "cpu.txt", CPU_ITEMS)
    cpu = {"workers": 4, "concurrency": 64, "batch_size": 1000}
    rates = alternate(
        {
            "processes 2": lambda: asyncproc_rate(tmp, inp, BURN, processes=2, **cpu),
            "processes 1": lambda: asyncproc_rate(tmp, inp, BURN, processes=1, **cpu),
            "spin 2": lambda: spin_rate(2),
            "spin 1": lambda: spin_rate(1),
        },
        repeats,
        log,
    )
    value = ratio(rates, "processes 2", "processes 1")
    control = ratio(rates, "spin 2", "spin 1")
    return [
        row("--processes 2 vs 1 (50 us CPU)", value, 1.6, rates, "processes 2", "processes 1"),
        row("control: 2 spinning processes vs 1", control, 1.6, rates, "spin 2", "spin 1"),
    ]


def durable_scenario(tmp: Path, repeats: int) -> list[dict[str, Any]]:
    inp = write_input(tmp / "durable.txt", SLEEP_ITEMS)
    job = {"processor_args": {"latency": "0.01"}, "concurrency": 1000, "batch_size": 1000}
    rates = alternate(
        {
            "checkpoints": lambda: asyncproc_rate(tmp, inp, "sleep", durable=True, **job),
            "no checkpoints": lambda: asyncproc_rate(tmp, inp, "sleep", durable=False, **job),
        },
        repeats,
        log,
    )
    value = ratio(rates, "checkpoints", "no checkpoints")
    names = ("checkpoints", "no checkpoints")
    return [row("batch 1000 vs checkpoints off", value, 0.95, rates, *names)]


def bench_scenario(tmp: Path, repeats: int) -> list[dict[str, Any]]:
    del tmp
    walls = []
    for repeat in range(max(1, repeats // 2)):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "asyncproc", "bench", "--processor", "sleep",
             "--processor-arg", "latency=0.01", "--synthetic", "10000", "--duration", "3",
             "--json", "--quiet"],
            capture_output=True, check=True, timeout=300,
        )  # fmt: skip
        walls.append(time.perf_counter() - started)
        log(f"repeat {repeat + 1}: asyncproc bench: {walls[-1]:.1f} s")
    wall = statistics.median(walls)
    return [{"what": "asyncproc bench, 6 levels, --duration 3 (s)", "value": round(wall, 1),
             "target": "< 30", "ok": wall < 30, "medians": {}}]  # fmt: skip


def row(
    what: str, value: float, target: float, rates: dict[str, list[float]], *names: str
) -> dict[str, Any]:
    medians = {name: round(statistics.median(rates[name])) for name in names}
    return {"what": what, "value": round(value, 3), "target": f">= {target}",
            "ok": value >= target, "medians": medians}  # fmt: skip


SCENARIOS = {
    "sleep": sleep_scenario,
    "cpu": cpu_scenario,
    "durable": durable_scenario,
    "bench": bench_scenario,
}


def main() -> int:
    parser = argparse.ArgumentParser(description="issue 5 throughput targets")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="asyncproc-throughput-") as tmp:
        for name in args.only.split(","):
            rows += SCENARIOS[name](Path(tmp), args.repeats)
    if args.json:
        print(json.dumps(rows, indent=2))
    for r in rows:
        mark = "ok" if r["ok"] else "MISSED"
        print(f"{r['what']:<42} {r['value']:>8} (target {r['target']}) {mark}  {r['medians']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
