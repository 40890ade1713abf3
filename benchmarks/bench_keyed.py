"""Keyed checkpoints at scale: memory and resume time for 10,000 and 1,000,000 keys.

For each size, one fresh subprocess marks N keys processed through the public manual API
(``LoaderCheckpoint.mark_processed``, saving every ``--interval`` marks) and leaves the
run unfinished; a second fresh subprocess resumes it and measures:

* resume time: ``CheckpointManager.start_run()`` plus ``run.loader(name)``, which reads
  every shard's committed key lines into a set;
* memory: peak RSS of the resuming process (``ru_maxrss``), and its growth over the
  RSS just before loading.

Usage::

    python benchmarks/bench_keyed.py [--sizes 10000,1000000] [--shards 8]
        [--interval 10000] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

import asyncproc

MARKER = "BENCH_KEYED "


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _write(ck: Path, n: int, shards: int, interval: int) -> dict[str, Any]:
    manager = asyncproc.CheckpointManager(ck, shards=shards)
    started = time.perf_counter()
    run = await manager.start_run({"bench": n})
    loader = await run.loader("bench", interval=interval)
    loader.set_total_items(n)
    for i in range(n):
        await loader.mark_processed(f"item-{i:09d}")
    await run.close()
    elapsed = time.perf_counter() - started
    return {"write_s": round(elapsed, 3), "marks_per_s": round(n / elapsed)}


async def _resume(ck: Path, n: int) -> dict[str, Any]:
    base = _rss_mib()
    started = time.perf_counter()
    run = await asyncproc.CheckpointManager(ck).start_run({"bench": n})
    loader = await run.loader("bench")
    elapsed = time.perf_counter() - started
    stats = loader.stats()
    assert stats.processed == n, stats
    assert loader.is_processed(f"item-{n - 1:09d}")
    grown = _rss_mib() - base
    await run.close()
    return {
        "resume_s": round(elapsed, 3),
        "rss_before_mib": round(base, 1),
        "rss_growth_mib": round(grown, 1),
        "peak_rss_mib": round(_peak_mib(), 1),
        "bytes_per_key": round(grown * 1024 * 1024 / n, 1),
    }


def _child(argv: list[str]) -> None:
    mode, ck, n = argv[0], Path(argv[1]), int(argv[2])
    if mode == "write":
        result = anyio.run(_write, ck, n, int(argv[3]), int(argv[4]))
    else:
        result = anyio.run(_resume, ck, n)
    print(MARKER + json.dumps(result))


def _spawn(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True, text=True, check=True, timeout=1800,
    )  # fmt: skip
    line = next(x for x in proc.stdout.splitlines() if x.startswith(MARKER))
    result: dict[str, Any] = json.loads(line[len(MARKER) :])
    return result


def measure(n: int, shards: int, interval: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench_keyed_"))
    try:
        ck = work / "ck"
        written = _spawn("write", str(ck), str(n), str(shards), str(interval))
        disk = sum(p.stat().st_size for p in ck.rglob("*") if p.is_file())
        resumed = _spawn("resume", str(ck), str(n))
        return {"keys": n, "shards": shards, "interval": interval, **written, **resumed,
                "disk_mib": round(disk / 1024 / 1024, 1)}  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _table(rows: list[dict[str, Any]]) -> str:
    head = ("keys", "write_s", "resume_s", "rss_growth_mib", "peak_rss_mib", "bytes_per_key",
            "disk_mib")  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(f"{r[h]:,}" for h in head) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--interval", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [measure(int(n), args.shards, args.interval) for n in args.sizes.split(",")]
    print(json.dumps(rows, indent=2) if args.json else _table(rows))


if __name__ == "__main__":
    main()
