"""Resume with another parallelism: the remaining ranges are re-cut, nothing is redone.

A run planned with ``--workers 2`` crashes (``--simulate-crash``) part way; the same
command resumes it with more workers, more processes, another concurrency and batch
size, or fewer workers. Each resume must give the clean run's bytes, report the
parallelism it used, re-cut the plan where it asked for more units, and call the
processor for exactly the items that were not committed when the run crashed: the
call log over both runs holds every item once, plus the items in flight at the crash.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    describe,
    expected_array,
    logging_processor,
    numbered_lines,
    run_cli,
    run_ok,
    summary_of,
    text_items,
    write_lines,
)
from v2kit import Arg, call_env, calls, committed, manifest_of, the_run

ITEMS = 3000
PLANNED_WORKERS = 2
CRASH_AFTER = 1000

PROCESSOR = logging_processor(
    """
async def work(item):
    log_call(item)
    await anyio.sleep(0.001)
    return {"item": item}
"""
)


class Job:
    """The input, the processor and the bytes of a clean run."""

    def __init__(self, base: Path) -> None:
        self.source = write_lines(base / "input.txt", numbered_lines(ITEMS))
        self.items = text_items(self.source.read_bytes())
        self.processor = base / "logged.py"
        self.processor.write_text(textwrap.dedent(PROCESSOR), encoding="utf-8")
        self.clean = b""

    def args(self, out_dir: Path, *parallelism: str) -> list[Arg]:
        return [
            "run", "--input", self.source, "--output", out_dir / "result.json",
            "--checkpoint", out_dir / "ck", "--processor", f"{self.processor}:work",
            "--retries", "0", *parallelism,
        ]  # fmt: skip


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Job:
    job = Job(tmp_path_factory.mktemp("v2_resume"))
    out_dir = job.source.parent / "clean"
    out_dir.mkdir()
    log = out_dir / "calls.log"
    summary = run_ok(*job.args(out_dir, "--workers", "2"), env=call_env(log))
    assert summary["processed"] == ITEMS and len(calls(log)) == ITEMS, summary
    job.clean = (out_dir / "result.json").read_bytes()
    assert job.clean == expected_array((i, {"item": s}) for i, s in enumerate(job.items))
    return job


# (resume arguments, workers, processes, concurrency the summary must report,
#  whether the resume must re-cut the plan into more units)
RESUMES = {
    "more_workers": (("--workers", "6"), 6, 1, 64, True),
    "processes": (("--processes", "2", "--workers", "4"), 4, 2, 64, True),
    "concurrency_and_batch": (
        ("--workers", "3", "--concurrency", "5", "--batch-size", "7"), 3, 1, 5, True,
    ),
    "fewer_workers": (("--workers", "1", "--concurrency", "24"), 1, 1, 24, False),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(RESUMES))
def test_resume_with_other_parallelism(case: str, job: Job, tmp_path: Path) -> None:
    resume_args, workers, processes, concurrency, recut = RESUMES[case]
    log = tmp_path / "calls.log"
    planned = ("--workers", str(PLANNED_WORKERS), "--concurrency", "16", "--batch-size", "50")
    crashed = run_cli(
        *job.args(tmp_path, *planned), "--simulate-crash", str(CRASH_AFTER), env=call_env(log)
    )
    assert crashed.returncode == 3, describe(crashed, "the simulated crash should exit 3")
    run_dir = the_run(tmp_path / "ck")
    assert run_dir is not None
    manifest = manifest_of(run_dir)
    assert manifest is not None
    units_at_crash = len(manifest.units)
    done = committed(run_dir)
    first = calls(log)
    index = {item: k for k, item in enumerate(job.items)}
    first_calls = [index[c] for c in first]
    # The crash landed after real progress and before the end, in a fresh run.
    assert CRASH_AFTER <= len(done) < ITEMS, (len(done), ITEMS)
    assert len(set(first_calls)) == len(first_calls), "a fresh run called an item twice"
    assert done <= set(first_calls), "an item is committed that was never processed"
    in_flight = set(first_calls) - done

    proc = run_cli(*job.args(tmp_path, *resume_args), env=call_env(log))
    assert proc.returncode == 0, describe(proc, f"resume ({case}) failed")
    summary = summary_of(proc)
    assert (tmp_path / "result.json").read_bytes() == job.clean, f"{case}: output differs"
    _check_summary(summary, workers, processes, concurrency)
    if recut:
        assert summary["units"] > units_at_crash and summary["units"] >= workers, (
            f"{case}: the resume should re-cut {units_at_crash} units for {workers} workers",
            summary,
        )
    else:
        assert summary["units"] == units_at_crash, (case, units_at_crash, summary)
    after = manifest_of(run_dir)
    assert after is not None and len(after.units) == summary["units"], (after, summary)

    second = [index[c] for c in calls(log)[len(first) :]]
    again = Counter(second)
    assert not done & set(again), f"{case}: committed items were processed again"
    assert all(n == 1 for n in again.values()), f"{case}: the resume called an item twice"
    assert set(again) == set(range(ITEMS)) - done, f"{case}: the resume skipped items"
    assert len(first) + len(second) - ITEMS == len(in_flight), (case, len(in_flight))


def _check_summary(summary: dict[str, Any], workers: int, processes: int, conc: int) -> None:
    assert summary["resumed"] is True, summary
    assert summary["processed"] == ITEMS and summary["failed"] == 0, summary
    assert summary["workers"] == workers, summary
    assert summary["processes"] == processes, summary
    assert summary["concurrency"] == conc, summary
