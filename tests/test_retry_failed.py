"""``--retry-failed``: failed items come back in input order, byte-identical to a clean run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import EXIT_ITEMS_FAILED, run_cli, summary_of

FLAKY = """
import os

import asyncproc

async def fn(item):
    index = asyncproc.current_item().index
    if os.environ.get("FLAKY") == "all" and index % 10 == 7:
        raise ValueError(f"flaky on {item}")
    if os.environ.get("FLAKY") == "some" and index % 100 == 17:
        raise ValueError(f"still flaky on {item}")
    return {"text": item, "n": len(item)}
"""


def _setup(tmp_path: Path, make_input: Callable[..., Path], output: str) -> tuple[list[str], Path]:
    source = make_input(2000)
    module = tmp_path / "flaky.py"
    module.write_text(FLAKY)
    out = tmp_path / output
    args = ["run", "--input", str(source), "--output", str(out), "--checkpoint",
            str(tmp_path / "ck"), "--processor", f"{module}:fn", "--retries", "0",
            "--workers", "3", "--batch-size", "50", "-q"]  # fmt: skip
    return args, out


def _clean(args: list[str], out: Path, tmp_path: Path) -> bytes:
    clean = tmp_path / f"clean{out.suffix}"
    argv = [a if a != str(out) else str(clean) for a in args]
    argv[argv.index("--checkpoint") + 1] = str(tmp_path / "ck-clean")
    run_cli(*argv, check=0)
    return clean.read_bytes()


def _failed_file(out: Path) -> Path:
    return out.with_name(f"{out.stem}.failed.jsonl")


def test_retry_failed_of_a_completed_run_restores_the_clean_output(
    tmp_path: Path, make_input: Callable[..., Path]
) -> None:
    for output in ("out.json", "out.jsonl"):
        args, out = _setup(tmp_path, make_input, output)
        first = summary_of(run_cli(*args, env={"FLAKY": "all"}, check=EXIT_ITEMS_FAILED))
        assert first["failed"] == 200
        assert _failed_file(out).exists()
        again = summary_of(run_cli(*args, "--retry-failed", check=0))
        assert (again["processed"], again["failed"]) == (2000, 0)
        assert again["failed_items_file"] is None
        assert not _failed_file(out).exists()
        assert out.read_bytes() == _clean(args, out, tmp_path)


def test_items_that_fail_again_stay_in_the_failed_file(
    tmp_path: Path, make_input: Callable[..., Path]
) -> None:
    args, out = _setup(tmp_path, make_input, "out.jsonl")
    run_cli(*args, env={"FLAKY": "all"}, check=EXIT_ITEMS_FAILED)
    again = summary_of(
        run_cli(*args, "--retry-failed", env={"FLAKY": "some"}, check=EXIT_ITEMS_FAILED)
    )
    assert (again["processed"], again["failed"]) == (1980, 20)
    still = _failed_file(out).read_text().splitlines()
    assert len(still) == 20 and all("still flaky" in line for line in still)
    summary_of(run_cli(*args, "--retry-failed", check=0))
    assert out.read_bytes() == _clean(args, out, tmp_path)


def test_a_crash_between_output_and_failed_file_duplicates_nothing(
    tmp_path: Path, make_input: Callable[..., Path]
) -> None:
    args, out = _setup(tmp_path, make_input, "out.json")
    run_cli(*args, env={"FLAKY": "all"}, check=EXIT_ITEMS_FAILED)
    # The second publish of the retry is the failed-items file: die just before it.
    crash = {"ASYNCPROC_CRASH_AT": "before_rename_output:2", "FLAKY": "some"}
    run_cli(*args, "--retry-failed", env=crash, check=3)
    assert _failed_file(out).exists()
    summary_of(run_cli(*args, "--retry-failed", check=0))
    assert out.read_bytes() == _clean(args, out, tmp_path)


def test_retry_failed_finishes_an_interrupted_run_first(
    tmp_path: Path, make_input: Callable[..., Path]
) -> None:
    args, out = _setup(tmp_path, make_input, "out.jsonl")
    run_cli(*args, "--simulate-crash", "300", env={"FLAKY": "all"}, check=3)
    summary = summary_of(run_cli(*args, "--retry-failed", check=0))
    assert summary["resumed"] is True
    assert (summary["processed"], summary["failed"]) == (2000, 0)
    assert out.read_bytes() == _clean(args, out, tmp_path)
