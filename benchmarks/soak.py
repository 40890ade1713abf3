"""Crash soak: kill asyncproc hundreds of times, resume each time, count what was lost.

Each episode runs one job to completion through repeated crashes: a SIGKILL at a random
moment, or a deterministic crash at a random named fault point (``ASYNCPROC_CRASH_AT``).
When the job finally exits 0, its output is compared byte for byte with a clean run and
its indices are counted: items lost and items duplicated must both be 0.

    python benchmarks/soak.py --kills 300
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from asyncproc.storage.faults import POINTS

PROCESSOR = """
import anyio

async def fn(item):
    await anyio.sleep(0.0005)
    return item
"""


@dataclass
class Tally:
    """What the soak did and found."""

    episodes: int = 0
    kills: int = 0
    crash_points: int = 0
    resumes: int = 0
    lost: int = 0
    duplicated: int = 0
    mismatches: int = 0
    points_hit: Counter[str] = field(default_factory=Counter)


def _command(work: Path, output: Path, checkpoint: Path) -> list[str]:
    return [
        sys.executable, "-m", "asyncproc", "run", "--input", str(work / "input.txt"),
        "--output", str(output), "--checkpoint", str(checkpoint),
        "--processor", f"{work / 'proc.py'}:fn", "--workers", "4", "--batch-size", "200",
        "--concurrency", "64", "-q",
    ]  # fmt: skip


def _one_attempt(argv: list[str], rng: random.Random, tally: Tally) -> int:
    env = dict(os.environ)
    if rng.random() < 0.4:
        point = rng.choice(POINTS)
        env["ASYNCPROC_CRASH_AT"] = f"{point}:{rng.randint(1, 3)}"
        code = subprocess.run(argv, env=env, capture_output=True, check=False).returncode
        if code == 3:
            tally.crash_points += 1
            tally.points_hit[point] += 1
        return code
    env.pop("ASYNCPROC_CRASH_AT", None)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return proc.wait(timeout=rng.uniform(0.05, 1.0))
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        tally.kills += 1
        return -9


def _episode(work: Path, n: int, rng: random.Random, clean: bytes, tally: Tally) -> None:
    output = work / f"out{n}.jsonl"
    argv = _command(work, output, work / f"ck{n}")
    for _ in range(200):
        if _one_attempt(argv, rng, tally) == 0:
            break
        tally.resumes += 1
    else:
        raise SystemExit(f"episode {n} did not finish after 200 attempts")
    tally.episodes += 1
    _count(output.read_bytes(), clean, tally)


def _count(got: bytes, clean: bytes, tally: Tally) -> None:
    indices = Counter(orjson.loads(line)["index"] for line in got.splitlines())
    expected = {orjson.loads(line)["index"] for line in clean.splitlines()}
    tally.lost += len(expected - set(indices))
    tally.duplicated += sum(count - 1 for count in indices.values() if count > 1)
    tally.mismatches += got != clean


def _prepare(work: Path, items: int) -> bytes:
    lines = (f"item {k:07d} {'x' * (k % 17)}\n" for k in range(items))
    (work / "input.txt").write_text("".join(lines))
    (work / "proc.py").write_text(PROCESSOR)
    clean = work / "clean.jsonl"
    subprocess.run(_command(work, clean, work / "ck-clean"), check=True, capture_output=True)
    return clean.read_bytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=300, help="crashes to inflict in total")
    parser.add_argument("--items", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    rng, tally = random.Random(args.seed), Tally()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="asyncproc-soak-") as tmp:
        work = Path(tmp)
        clean = _prepare(work, args.items)
        while tally.kills + tally.crash_points < args.kills:
            _episode(work, tally.episodes, rng, clean, tally)
    print(f"seed {args.seed}, {time.monotonic() - started:.0f} s, {args.items} items per run")
    print(f"episodes {tally.episodes}, SIGKILLs {tally.kills}, crash points {tally.crash_points}, "
          f"resumes {tally.resumes}")  # fmt: skip
    print(f"items lost {tally.lost}, duplicated {tally.duplicated}, "
          f"outputs differing from the clean run {tally.mismatches}")  # fmt: skip
    print("crash points hit: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.points_hit.items())))
    return 0 if tally.lost == tally.duplicated == tally.mismatches == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
