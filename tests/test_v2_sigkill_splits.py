"""SIGKILL a run that splits its units again and again; resume until done: exact bytes.

The cost of an item grows with its number, so the units finish one after another and
each idle slot splits the unit with the most left: splits happen all through the run.
Kill moments are random (seeded, printed; fix with ASYNCPROC_TEST_SEED). Some attempts
are killed after a random delay, others right after the manifest shows a split made
by that very attempt (the first one always is), so kills land around splits. Between
kills the test reads the manifest's units and the committed items: at the end, no
item committed before a kill may have been processed again, and the output must be
the clean run's bytes.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import logging_processor, numbered_lines, run_ok, text_items, wait_until, write_lines
from v2kit import (
    Arg,
    call_env,
    calls,
    committed_now,
    kill_group,
    start,
    units_now,
)

from asyncproc.engine.unit import window

ITEMS = 4000
WORKERS = 4
CONCURRENCY = 16
BATCH = 25
MAX_KILLS = 5

GRADED = logging_processor(
    f"""
async def work(item):
    log_call(item)
    await anyio.sleep(0.004 * (int(item.split()[1]) / {ITEMS}) ** 2)
    return {{"item": item}}
"""
)


@dataclass(frozen=True)
class Kill:
    """One attempt that was SIGKILLed, as the run directory told it."""

    after_split: bool  # killed on purpose right after a split this attempt recorded
    units_before: int  # units in the manifest before the attempt
    units_at_kill: int
    committed_before: int
    committed: frozenset[int]  # items durably committed when the kill landed
    calls_at_kill: int  # call log length then

    @property
    def progressed(self) -> bool:
        return self.committed_before < len(self.committed) < ITEMS


def _args(source: Path, processor: Path, out_dir: Path) -> list[Arg]:
    out_dir.mkdir()
    return [
        "run", "--input", source, "--output", out_dir / "result.json",
        "--checkpoint", out_dir / "ck", "--processor", f"{processor}:work",
        "--workers", str(WORKERS), "--concurrency", str(CONCURRENCY),
        "--batch-size", str(BATCH), "--retries", "0", "-q",
    ]  # fmt: skip


def _wait_for_split(proc: subprocess.Popen[bytes], ck: Path, log: Path) -> bool:
    """Wait until this attempt records a split; False if it finished first.

    Units recorded before its first call are the plan or a resume's re-cut: a split is
    a unit added after work began.
    """
    size = log.stat().st_size if log.exists() else 0
    if not wait_until(
        lambda: log.exists() and log.stat().st_size > size, "a call", proc, exit_ok=True
    ):
        return False
    working = units_now(ck)
    return wait_until(lambda: units_now(ck) > working, "a split", proc, exit_ok=True)


def _attempt(
    argv: list[Arg], env: dict[str, str], work: Path, rng: random.Random, after_split: bool
) -> Kill | dict[str, Any]:
    """One attempt, killed at a random moment; its summary if it finished first."""
    ck, log = work / "ck", work / "calls.log"
    units_before, committed_before = units_now(ck), len(committed_now(ck))
    proc = start(argv, env, work)
    try:
        if after_split:
            waited = _wait_for_split(proc, ck, log)
            time.sleep(rng.uniform(0.0, 0.1) if waited else 0.0)  # randomness, not sync
        else:
            time.sleep(rng.uniform(0.2, 1.6))  # the randomness of the kill moment
    finally:
        landed = kill_group(proc)
    if not landed:
        stderr = (work / "stderr").read_text(errors="replace")[-3000:]
        assert proc.returncode == 0, f"an attempt exited {proc.returncode}:\n{stderr}"
        summary: dict[str, Any] = json.loads((work / "stdout").read_bytes())
        return summary
    return Kill(after_split, units_before, units_now(ck), committed_before,
                frozenset(committed_now(ck)), len(calls(log)))  # fmt: skip


def test_sigkill_around_splits_then_resume(tmp_path: Path) -> None:
    seed = int(os.environ.get("ASYNCPROC_TEST_SEED", random.randrange(1 << 30)))
    print(f"ASYNCPROC_TEST_SEED={seed}")
    rng = random.Random(seed)
    source = write_lines(tmp_path / "input.txt", numbered_lines(ITEMS))
    items = text_items(source.read_bytes())
    processor = tmp_path / "graded.py"
    processor.write_text(textwrap.dedent(GRADED), encoding="utf-8")

    clean_args = _args(source, processor, tmp_path / "clean")
    clean = run_ok(*clean_args, env=call_env(tmp_path / "clean" / "calls.log"))
    assert clean["units"] > WORKERS + 1, f"the graded job should split repeatedly: {clean}"
    expected = (tmp_path / "clean" / "result.json").read_bytes()

    work = tmp_path / "killed"
    args, log = _args(source, processor, work), work / "calls.log"
    env = call_env(log)
    kills: list[Kill] = []
    while len(kills) < MAX_KILLS:
        outcome = _attempt(args, env, work, rng, after_split=not kills or rng.random() < 0.5)
        if not isinstance(outcome, Kill):  # the attempt finished before its kill
            summary = outcome
            break
        kills.append(outcome)
    else:
        summary = run_ok(*args, env=env)
    assert summary["processed"] == ITEMS and summary["failed"] == 0, (seed, summary)
    assert summary["resumed"] is True, (seed, summary)
    assert (work / "result.json").read_bytes() == expected, f"seed {seed}: output differs"
    _check_kills(seed, kills, calls(log), items)


def _check_kills(seed: int, kills: list[Kill], called: list[str], items: list[str]) -> None:
    index = {item: k for k, item in enumerate(items)}
    assert {index[c] for c in called} == set(range(ITEMS)), f"seed {seed}: items never called"
    for n, kill in enumerate(kills):
        again = kill.committed & {index[c] for c in called[kill.calls_at_kill :]}
        assert not again, f"seed {seed}: {len(again)} items committed before kill {n} redone"
    around = [k for k in kills if k.after_split and k.units_at_kill > k.units_before]
    split_before = [k for k in kills if k.units_at_kill > WORKERS]
    print(
        f"seed {seed}: {len(kills)} kills landed, {sum(k.progressed for k in kills)} after "
        f"progress, {len(split_before)} with a split recorded, {len(around)} right after a "
        f"split of their own attempt; {len(called) - ITEMS} calls beyond one per item"
    )
    assert any(k.progressed for k in around), (
        f"seed {seed}: no kill landed after a split, after progress and before the end: {kills}"
    )
    bound = ITEMS + len(kills) * WORKERS * window(CONCURRENCY, BATCH)
    assert len(called) <= bound, f"seed {seed}: {len(called)} calls, at most {bound} expected"
