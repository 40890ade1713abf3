"""``asyncproc verify``: real kills of real runs of the user's processor, compared with a
clean run; a processor that is not deterministic is named as such and fails."""

from __future__ import annotations

from pathlib import Path

import orjson
from conftest import describe, error_lines, numbered_lines, run_cli, write_lines
from faultkit import assert_no_traceback, write_module

PROCESSORS = """
import asyncio
import random


async def steady(item):
    await asyncio.sleep(0.005)  # in flight long enough for a kill to catch items mid-work
    return {"item": item, "n": len(item)}


def noisy(item):
    return {"item": item, "draw": random.random()}
"""


def _verify(tmp_path: Path, fn: str, *extra: str) -> tuple[dict[str, object], str, int]:
    source = write_lines(tmp_path / "input.txt", numbered_lines(900))
    module = write_module(tmp_path / "procs.py", PROCESSORS)
    proc = run_cli("verify", "--input", source, "--processor", f"{module}:{fn}", "--json",
                   "--seed", "7", *extra, env={"TMPDIR": str(tmp_path)})  # fmt: skip
    assert_no_traceback(proc)
    return orjson.loads(proc.stdout), proc.stderr, proc.returncode


def test_verify_kills_resumes_and_matches_a_clean_run(tmp_path: Path) -> None:
    verdict, stderr, code = _verify(
        tmp_path, "steady", "--items", "600", "--kills", "2", "--concurrency", "8"
    )
    assert code == 0, (verdict, stderr)
    assert verdict["items"] == 600 and verdict["kills"] == 2 == verdict["kills_asked"], verdict
    assert verdict["identical"] is True and verdict["deterministic"] is True, verdict
    # Items in flight when a kill landed ran again, and the shim counted them.
    max_calls = verdict["max_calls_per_item"]
    assert isinstance(max_calls, int) and 2 <= max_calls <= 3, verdict
    assert verdict["scratch"] is None, "a passing verification cleans up"
    assert not list(tmp_path.glob("asyncproc-verify-*")), "a passing verification cleans up"


def test_verify_says_when_the_processor_is_not_deterministic(tmp_path: Path) -> None:
    verdict, stderr, code = _verify(tmp_path, "noisy", "--items", "40", "--kills", "1")
    assert code == 1, (verdict, stderr)
    assert verdict["deterministic"] is False, verdict
    (line,) = error_lines(stderr)
    assert "byte-identical promise cannot hold" in line, line
    scratch = verdict["scratch"]
    assert isinstance(scratch, str) and Path(scratch, "clean", "out.jsonl").is_file(), verdict
    assert Path(scratch).parent == tmp_path, "the scratch directory is under TMPDIR"


def test_verify_refuses_an_unusable_processor_before_any_run(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "input.txt", numbered_lines(5))
    proc = run_cli("verify", "--input", source, "--processor", "no_such_module:fn")
    assert proc.returncode == 2, describe(proc)
    assert len(error_lines(proc.stderr)) == 1 and proc.stdout == "", describe(proc)
