"""SIGKILL a real run at random moments mid-work, resume until done: output must be exact.

Each attempt is killed a random moment (seeded; the seed is printed and can be fixed with
ASYNCPROC_TEST_SEED) after it has committed a checkpoint of its own, so every kill lands
on a run that has made progress. A kill is counted only if the process died of it, the
call log grew and no output existed yet; at least one such kill must happen, and the
final run must say it resumed. The processor appends each item it is called with to a
call log, one ``write`` per call, so the test can count calls.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import (
    CLI_TIMEOUT,
    checkpoint_files,
    cli_command,
    committed_since,
    expected_array,
    logging_processor,
    numbered_lines,
    run_dirs,
    run_ok,
    text_items,
    wait_until,
    write_lines,
)

ITEMS = 20_000
WORKERS = 4
BATCH = 50
CONCURRENCY = 32
MAX_KILLS = 4
KILL_WITHIN = 0.25  # seconds after an attempt's first commit

PROCESSOR = logging_processor(
    """
async def work(item):
    log_call(item)
    await anyio.sleep(0.0002)
    return {"item": item, "words": len(item.split())}
"""
)


def _args(source: Path, output: Path, ck: Path, processor: Path) -> list[Any]:
    return [
        "run",
        "--input",
        source,
        "--output",
        output,
        "--checkpoint",
        ck,
        "--processor",
        f"{processor}:work",
        "--workers",
        str(WORKERS),
        "--batch-size",
        str(BATCH),
        "--concurrency",
        str(CONCURRENCY),
        "--quiet",
    ]


def _env(log: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["ASYNCPROC_TEST_CALL_LOG"] = str(log)
    return env


def _calls(log: Path) -> list[str]:
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


def _size(log: Path) -> int:
    return log.stat().st_size if log.exists() else 0


@dataclass(frozen=True)
class Attempt:
    """How one attempt at the job ended, and whether it was killed mid-work."""

    code: int | None  # the exit code of a run that ended on its own; None if killed
    stdout: str
    mid_work: bool  # killed by SIGKILL after its call log grew, before any output existed


def _attempt(argv: list[str], env: dict[str, str], delay: float, work: Path, n: int) -> Attempt:
    """Start a run; once it has called the processor and committed a checkpoint of its
    own, SIGKILL its process group ``delay`` s later, unless it has ended by then."""
    log, output, ck = Path(env["ASYNCPROC_TEST_CALL_LOG"]), work / "result.json", work / "ck"
    logged, before = _size(log), checkpoint_files(ck)

    def progressed() -> bool:
        return _size(log) > logged and committed_since(ck, before)

    out_path = work / f"stdout.{n}"
    with out_path.open("wb") as out, (work / "stderr").open("ab") as err:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            wait_until(
                lambda: proc.poll() is not None or progressed(),
                f"attempt {n} to call the processor and commit a checkpoint",
            )
            time.sleep(delay)  # the randomness of the kill moment, not synchronisation
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=CLI_TIMEOUT)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=CLI_TIMEOUT)
    if proc.returncode != -signal.SIGKILL:
        return Attempt(proc.returncode, out_path.read_text(encoding="utf-8", errors="replace"),
                       mid_work=False)  # fmt: skip
    mid_work = _size(log) > logged and not output.exists()
    return Attempt(None, "", mid_work)


def _kill_until_done(
    argv: list[str], env: dict[str, str], rng: random.Random, work: Path
) -> tuple[int, int, dict[str, Any] | None]:
    """Kill attempts at random moments until one finishes on its own or kills run out.

    Returns (kills, kills that landed mid-work, the summary of a run that finished on its
    own or None).
    """
    kills = mid_work = 0
    while kills < MAX_KILLS:
        attempt = _attempt(argv, env, rng.uniform(0.0, KILL_WITHIN), work, kills)
        if attempt.code is None:
            kills += 1
            mid_work += attempt.mid_work
            continue
        stderr = (work / "stderr").read_text(errors="replace")[-3000:]
        assert attempt.code == 0, f"a run after {kills} kills exited {attempt.code}:\n{stderr}"
        return kills, mid_work, json.loads(attempt.stdout)
    return kills, mid_work, None


def test_sigkill_at_random_moments_then_resume(tmp_path: Path) -> None:
    seed = int(os.environ.get("ASYNCPROC_TEST_SEED", random.randrange(1 << 30)))
    print(f"ASYNCPROC_TEST_SEED={seed}")
    rng = random.Random(seed)
    processor = tmp_path / "killproc.py"
    processor.write_text(textwrap.dedent(PROCESSOR), encoding="utf-8")
    source = write_lines(tmp_path / "input.txt", numbered_lines(ITEMS))
    items = text_items(source.read_bytes())
    assert len(items) == ITEMS

    work = tmp_path / "killed"
    work.mkdir()
    output, log = work / "result.json", work / "calls.log"
    args = _args(source, output, work / "ck", processor)
    kills, mid_work, summary = _kill_until_done(cli_command(*args), _env(log), rng, work)
    if summary is None:
        summary = run_ok(*args, env={"ASYNCPROC_TEST_CALL_LOG": str(log)})
    print(f"seed {seed}: {kills} kills, {mid_work} mid-work, resumed={summary['resumed']}")
    assert mid_work >= 1, f"seed {seed}: no kill landed on a run that had made progress"
    assert summary["resumed"] is True, (seed, summary)
    assert [r.name for r in run_dirs(work / "ck")] == [summary["run_id"]], (
        f"seed {seed}: every attempt should have resumed the one run"
    )
    assert summary["total_items"] == ITEMS, (seed, summary)
    assert summary["processed"] == ITEMS, (seed, summary)
    assert summary["failed"] == 0, (seed, summary)

    clean = tmp_path / "clean"
    clean.mkdir()
    clean_log = clean / "calls.log"
    run_ok(
        *_args(source, clean / "result.json", clean / "ck", processor),
        env={"ASYNCPROC_TEST_CALL_LOG": str(clean_log)},
    )
    assert len(_calls(clean_log)) == ITEMS, "a clean run calls the processor once per item"

    expected = expected_array(
        (i, {"item": s, "words": len(s.split())}) for i, s in enumerate(items)
    )
    assert (clean / "result.json").read_bytes() == expected
    assert output.read_bytes() == expected, f"seed {seed}: output after {kills} kills differs"

    calls = _calls(log)
    assert set(calls) == set(items), f"seed {seed}: some item was never processed"
    print(f"seed {seed}: {len(calls) - ITEMS} calls beyond one per item, {kills} kills")
    # What a kill may redo, from the design (README, "Guarantees"): the items lanes had
    # taken past each running unit's last durable checkpoint. Lanes take an item of a
    # unit only while fewer than its window, max(4 x concurrency, 64) + batch_size +
    # min(7 x batch_size, 8192), are past that checkpoint; concurrency is the run's whole
    # lane pool (every lane may work on any unit), not a per-worker share; and at most
    # --workers units run at once. Every other call happens once.
    window = max(4 * CONCURRENCY, 64) + BATCH + min(7 * BATCH, 8192)
    bound = ITEMS + kills * WORKERS * window
    assert len(calls) <= bound, (
        f"seed {seed}: {len(calls)} processor calls for {ITEMS} items after {kills} kills "
        f"(at most {bound} expected): committed work was redone"
    )
