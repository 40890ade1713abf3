"""Issue 16: what the per-segment CRC-32 costs a no-op run (target: well under 1%).

Two contenders, each a fresh process running ``asyncproc.run_file`` with the
``identity`` processor over the same input, checkpoints on: ``crc`` as shipped, and
``off`` with ``zlib.crc32`` replaced by a function returning 0 in the two modules that
call it (the segment writer's store and the merge), so that every other step is the
same. They alternate within each repeat; the figures are the medians of the
per-repeat ratios ``crc / off``, minus one, of the child's CPU time (user + system,
threads included: steadier than wall time on a shared machine) and of its wall time.

A second figure does not depend on the machine's noise: the time ``zlib.crc32`` takes
over the run's committed bytes, twice (once as they are written, once at the merge),
as a share of the median ``off`` run. A resume also reads the committed bytes once to
check them; that is a cost of the resume only, not measured here.

Usage: ``python benchmarks/bench_checksum.py [--items 200000] [--repeats 7]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import types
import zlib
from functools import partial
from pathlib import Path
from typing import Any

from _alternate import Contenders, alternate

MARKER = "CHECKSUM "


def log(message: str) -> None:
    sys.stderr.write(f"[checksum] {message}\n")
    sys.stderr.flush()


def child(spec: dict[str, Any]) -> None:
    """Run the job once in this process, the CRC on or off; print its wall time."""
    import asyncproc
    from asyncproc.engine import merge
    from asyncproc.storage import unitstore

    if not spec["crc"]:
        off = types.SimpleNamespace(crc32=lambda data, crc=0: 0)
        for module in (unitstore, merge):
            setattr(module, "zlib", off)  # noqa: B010 (a patch, on purpose)
    started, cpu_started = time.perf_counter(), time.process_time()
    asyncproc.run_file(spec["input"], spec["output"], "identity", quiet=True, new_run=True,
                       checkpoint_dir=spec["ck"])  # fmt: skip
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(MARKER + json.dumps({"seconds": wall, "cpu": cpu}), flush=True)


def timed(tmp: Path, source: Path, items: int, crc: bool, walls: list[float]) -> float:
    """Items per CPU second of one run (as :func:`alternate` wants a rate); its wall time
    goes to ``walls``."""
    spec = {"input": str(source), "output": str(tmp / "out.jsonl"), "ck": str(tmp / "ck"),
            "crc": crc}  # fmt: skip
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                          capture_output=True, text=True, check=True, timeout=900)  # fmt: skip
    line = [x for x in proc.stdout.splitlines() if x.startswith(MARKER)][-1]
    result = json.loads(line[len(MARKER) :])
    walls.append(float(result["seconds"]))
    return items / float(result["cpu"])


def crc_seconds(output: Path) -> float:
    """``zlib.crc32`` over the output's bytes in 100-item pieces, twice: best of 15."""
    raw = output.read_bytes()
    step = max(1, len(raw) // max(1, raw.count(b"\n") // 100))
    pieces = [raw[k : k + step] for k in range(0, len(raw), step)]
    best = float("inf")
    for _ in range(15):
        started = time.perf_counter()
        for _ in range(2):
            crc = 0
            for piece in pieces:
                crc = zlib.crc32(piece, crc)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    with tempfile.TemporaryDirectory(prefix="bench_checksum_") as tmp_name:
        tmp = Path(tmp_name)
        source = tmp / "in.txt"
        source.write_text("".join(f"item-{i}\n" for i in range(args.items)))
        walls: dict[str, list[float]] = {"crc": [], "off": []}
        contenders: Contenders = {
            name: partial(timed, tmp, source, args.items, name == "crc", walls[name])
            for name in walls
        }
        rates = alternate(contenders, args.repeats, log)
        cpu = {name: [args.items / r for r in rs] for name, rs in rates.items()}
        run = statistics.median(walls["off"])
        direct = crc_seconds(tmp / "out.jsonl") / run
    print(f"no-op run of {args.items:,} items, {args.repeats} alternated repeats")
    print(f"  median wall time: crc {statistics.median(walls['crc']):.3f} s, off {run:.3f} s")
    print(f"  CPU time, median of per-repeat ratios crc/off - 1: {_overhead(cpu):+.2%}")
    print(f"  wall time, median of per-repeat ratios crc/off - 1: {_overhead(walls):+.2%}")
    print(f"  zlib.crc32 over the committed bytes, twice: {direct:.3%} of the median run off")


def _overhead(seconds: dict[str, list[float]]) -> float:
    pairs = zip(seconds["crc"], seconds["off"], strict=True)
    return statistics.median(a / b for a, b in pairs) - 1


if __name__ == "__main__":
    main()
