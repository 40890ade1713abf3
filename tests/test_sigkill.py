"""SIGKILL a real run at random moments, resume until done: output must be exact.

The kill moments are random (seeded; the seed is printed and can be fixed with
ASYNCPROC_TEST_SEED); nothing asserts on timing. The processor appends each item it
is called with to a call log, one ``write`` per call, so the test can count calls.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

from conftest import (
    CLI_TIMEOUT,
    cli_command,
    expected_array,
    logging_processor,
    numbered_lines,
    run_ok,
    text_items,
    write_lines,
)

ITEMS = 20_000
WORKERS = 4
BATCH = 50
CONCURRENCY = 32
MAX_KILLS = 6

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
    env.pop("ASYNCPROC_CRASH_AT", None)
    env["ASYNCPROC_TEST_CALL_LOG"] = str(log)
    return env


def _calls(log: Path) -> list[str]:
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


def _start_and_kill(
    argv: list[str], env: dict[str, str], delay: float, logs: Path, round_no: int
) -> tuple[int | None, str]:
    """Start a run, SIGKILL its process group after ``delay`` s.

    Returns (exit code, stdout), the exit code None if the process was killed.
    """
    out_path = logs / f"stdout.{round_no}"
    with out_path.open("wb") as out, (logs / "stderr").open("ab") as err:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            time.sleep(delay)  # the randomness of the kill moment, not synchronisation
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=CLI_TIMEOUT)
                return None, ""
            code = proc.returncode
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=CLI_TIMEOUT)
    return code, out_path.read_text(encoding="utf-8", errors="replace")


def _kill_until_done(
    argv: list[str], env: dict[str, str], rng: random.Random, work: Path, output: Path
) -> tuple[int, int, bool, dict[str, Any] | None]:
    """Kill runs at random moments until one finishes, the output appears or kills run out.

    Returns (kills, calls before the last run, whether the output existed before it,
    the summary of a run that finished on its own or None).
    """
    log = Path(env["ASYNCPROC_TEST_CALL_LOG"])
    kills = 0
    while True:
        before, existed = len(_calls(log)), output.exists()
        if kills >= MAX_KILLS or existed:
            return kills, before, existed, None
        code, stdout = _start_and_kill(argv, env, rng.uniform(0.05, 0.6), work, kills)
        if code is None:
            kills += 1
            continue
        stderr = (work / "stderr").read_text(errors="replace")[-3000:]
        assert code == 0, f"a run after {kills} kills exited {code}; stderr:\n{stderr}"
        return kills, before, existed, json.loads(stdout)


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
    kills, before, existed, summary = _kill_until_done(
        cli_command(*args), _env(log), rng, work, output
    )
    if summary is None:
        summary = run_ok(*args, env={"ASYNCPROC_TEST_CALL_LOG": str(log)})
    print(f"seed {seed}: {kills} kills, final run resumed={summary['resumed']}")
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
    if not summary["resumed"]:
        # A fresh run is right only if nothing was started (killed before any call) or the
        # killed run had already completed; that run then processed every item once more.
        assert before == 0 or existed, (
            f"seed {seed}: after {kills} kills and {before} calls the last run did not resume"
        )
        assert len(calls) - before == ITEMS, (seed, len(calls), before)
        calls = calls[:before] if before else calls
    print(f"seed {seed}: {len(calls) - ITEMS} calls beyond one per item, {kills} kills")
    # A kill redoes at most what lanes may hold beyond the durable prefix, per shard
    # (README, "Guarantees"): max(4 x lanes, 64) + batch + min(7 x batch, 8192).
    lanes = CONCURRENCY // WORKERS
    window = max(4 * lanes, 64) + BATCH + min(7 * BATCH, 8192)
    bound = ITEMS + kills * WORKERS * window
    assert len(calls) <= bound, (
        f"seed {seed}: {len(calls)} processor calls for {ITEMS} items after {kills} kills "
        f"(at most {bound} expected): committed work was redone"
    )
