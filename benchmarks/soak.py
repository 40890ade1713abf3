"""Crash soak: kill asyncproc hundreds of times, resume each time, count what was lost.

Each episode runs one job to completion through repeated crashes: a SIGKILL at a random
moment, or a deterministic crash at a random named fault point (``ASYNCPROC_CRASH_AT``).
When the job finally exits 0, its output is compared byte for byte with a clean run and
its indices are counted: items lost and items duplicated must both be 0.

With ``--skewed`` an item's cost grows with its number (cubically), so the units finish
one after another and idle slots split the slow ones all through the run: the random
SIGKILLs and the split fault points then land around splits. After each SIGKILL the soak
reads the manifest: a kill counts as *after a split* when the killed attempt had begun
committing (a checkpoint written since it started, so a resume's re-cut was behind it)
and the manifest then listed more units than at that moment.

With ``--damage P`` (0.2 unless given), after each crash one digit in the committed bytes
of a random segment is changed with probability P, as a disk might: the line stays valid
JSON, so only the segment's CRC tells. The resume must not publish it: the damaged unit
goes back to its newest checkpoint that checks out, and the output is still the clean one.

    python benchmarks/soak.py --kills 300
    python benchmarks/soak.py --kills 300 --skewed
    python benchmarks/soak.py --kills 300 --damage 0.5
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from asyncproc._errors import AsyncprocError
from asyncproc.storage.faults import POINTS
from asyncproc.storage.records import Manifest, UnitCheckpoint

PROCESSOR = """
import anyio

async def fn(item):
    await anyio.sleep(0.0005)
    return item
"""

# The cost grows with the item's number: the last units are slow, and are split.
SKEWED = """
import anyio

async def fn(item):
    await anyio.sleep(0.006 * (int(item.split()[1]) / {items}) ** 3)
    return item
"""

WORKERS = 4
POLL = 0.01


@dataclass
class Tally:
    """What the soak did and found."""

    episodes: int = 0
    kills: int = 0
    kills_with_new_units: int = 0  # the manifest listed more units than planned
    kills_after_split: int = 0  # ... more than when the killed attempt began committing
    crash_points: int = 0
    damaged: int = 0  # digits changed in committed segment bytes
    resumes: int = 0
    lost: int = 0
    duplicated: int = 0
    mismatches: int = 0
    points_hit: Counter[str] = field(default_factory=Counter)


def _command(work: Path, output: Path, checkpoint: Path) -> list[str]:
    return [
        sys.executable, "-m", "asyncproc", "run", "--input", str(work / "input.txt"),
        "--output", str(output), "--checkpoint", str(checkpoint),
        "--processor", f"{work / 'proc.py'}:fn", "--workers", str(WORKERS), "--batch-size", "200",
        "--concurrency", "64", "-q",
    ]  # fmt: skip


def _units(checkpoint: Path) -> int:
    """Units in the run's manifest now (0 before the run is planned)."""
    for manifest in checkpoint.glob("run_*/manifest.json"):
        try:
            return len(Manifest.from_bytes(manifest.read_bytes(), str(manifest)).units)
        except (OSError, AsyncprocError):
            continue
    return 0


def _committed_since(checkpoint: Path, started: float) -> bool:
    """Whether a unit checkpoint was written since ``started`` (``time.time()``)."""
    for path in checkpoint.glob("run_*/units/*.ckpt"):
        try:
            if path.stat().st_mtime >= started:
                return True
        except OSError:
            continue
    return False


def _crash_point(argv: list[str], rng: random.Random, tally: Tally) -> int:
    env = dict(os.environ)
    point = rng.choice(POINTS)
    env["ASYNCPROC_CRASH_AT"] = f"{point}:{rng.randint(1, 3)}"
    code = subprocess.run(argv, env=env, capture_output=True, check=False).returncode
    if code == 3:
        tally.crash_points += 1
        tally.points_hit[point] += 1
    return code


def _sigkill(argv: list[str], checkpoint: Path, wait: float, tally: Tally) -> int:
    """Run, SIGKILL after ``wait`` s unless done; read the manifest's units meanwhile."""
    env = {k: v for k, v in os.environ.items() if k != "ASYNCPROC_CRASH_AT"}
    started, deadline = time.time(), time.monotonic() + wait
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    working = None  # units once this attempt began committing: its re-cut is behind it
    while proc.poll() is None and time.monotonic() < deadline:
        if working is None and _committed_since(checkpoint, started):
            working = _units(checkpoint)
        time.sleep(POLL)  # polling the run's state, and the randomness of the kill moment
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    tally.kills += 1
    units = _units(checkpoint)
    tally.kills_with_new_units += units > WORKERS
    tally.kills_after_split += working is not None and units > working
    return -9


_DIGIT = re.compile(rb"[0-9]")


def _committed(checkpoint: Path) -> list[tuple[Path, int]]:
    """Every (segment, committed length) a readable checkpoint names, non-empty ones."""
    found = []
    for slot in checkpoint.glob("run_*/units/*.ckpt"):
        try:
            state = UnitCheckpoint.from_bytes(slot.read_bytes(), str(slot))
        except (OSError, AsyncprocError):
            continue
        segments = slot.parent.parent / "segments"
        found += [(segments / ref.name, ref.length) for ref in state.segments if ref.length]
    return found


def _damage(checkpoint: Path, rng: random.Random, tally: Tally) -> None:
    """Change one digit in the committed bytes of a random segment (in place)."""
    committed = _committed(checkpoint)
    rng.shuffle(committed)
    for segment, length in committed:
        try:
            with segment.open("r+b") as fh:
                raw = fh.read(length)
                found = _DIGIT.search(raw, rng.randrange(len(raw))) or _DIGIT.search(raw)
                if found is None:
                    continue
                fh.seek(found.start())
                fh.write(b"%d" % ((int(found.group()) + rng.randint(1, 9)) % 10))
        except OSError:
            continue
        tally.damaged += 1
        return


def _one_attempt(
    argv: list[str], checkpoint: Path, rng: random.Random, tally: Tally, max_wait: float
) -> int:
    if rng.random() < 0.4:
        return _crash_point(argv, rng, tally)
    return _sigkill(argv, checkpoint, rng.uniform(0.05, max_wait), tally)


def _episode(
    work: Path, n: int, rng: random.Random, clean: bytes, tally: Tally, knobs: tuple[float, float]
) -> None:
    output, checkpoint = work / f"out{n}.jsonl", work / f"ck{n}"
    argv = _command(work, output, checkpoint)
    max_wait, damage = knobs
    for _ in range(200):
        if _one_attempt(argv, checkpoint, rng, tally, max_wait) == 0:
            break
        if rng.random() < damage:
            _damage(checkpoint, rng, tally)
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


def _prepare(work: Path, items: int, skewed: bool) -> bytes:
    lines = (f"item {k:07d} {'x' * (k % 17)}\n" for k in range(items))
    (work / "input.txt").write_text("".join(lines))
    (work / "proc.py").write_text(SKEWED.format(items=items) if skewed else PROCESSOR)
    clean = work / "clean.jsonl"
    subprocess.run(_command(work, clean, work / "ck-clean"), check=True, capture_output=True)
    return clean.read_bytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=300, help="crashes to inflict in total")
    parser.add_argument("--items", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument(
        "--skewed", action="store_true", help="items cost more the later they come: units split"
    )
    parser.add_argument(
        "--max-wait", type=float, default=None,
        help="longest wait before a SIGKILL, in seconds [default: 1.0; 1.5 with --skewed]",
    )  # fmt: skip
    parser.add_argument(
        "--damage", type=float, default=0.2,
        help="chance, after each crash, of changing a digit of a committed segment",
    )  # fmt: skip
    args = parser.parse_args()
    rng, tally = random.Random(args.seed), Tally()
    max_wait = args.max_wait or (1.5 if args.skewed else 1.0)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="asyncproc-soak-") as tmp:
        work = Path(tmp)
        clean = _prepare(work, args.items, args.skewed)
        while tally.kills + tally.crash_points < args.kills:
            _episode(work, tally.episodes, rng, clean, tally, (max_wait, args.damage))
    print(f"seed {args.seed}, {time.monotonic() - started:.0f} s, {args.items} items per run"
          f"{', skewed' if args.skewed else ''}")  # fmt: skip
    print(f"episodes {tally.episodes}, SIGKILLs {tally.kills}, crash points {tally.crash_points}, "
          f"resumes {tally.resumes}, committed digits changed {tally.damaged}")  # fmt: skip
    print(f"SIGKILLs with more units than planned {tally.kills_with_new_units}, "
          f"after a split recorded by the killed attempt {tally.kills_after_split}")  # fmt: skip
    print(f"items lost {tally.lost}, duplicated {tally.duplicated}, "
          f"outputs differing from the clean run {tally.mismatches}")  # fmt: skip
    print("crash points hit: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.points_hit.items())))
    return 0 if tally.lost == tally.duplicated == tally.mismatches == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
