"""Deterministic fault injection: die (or fail with an I/O error) at every named point.

``ASYNCPROC_CRASH_AT="name:n"`` makes a real ``asyncproc run`` exit 3 the n-th time it
passes the point ``name``; ``"name:n:ENOSPC"`` raises that OSError there once. After each
fault the same command, run again without the fault, must finish with output that is
byte-identical to a clean run, and leave no state behind.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from conftest import (
    describe,
    error_lines,
    expected_text_stats_array,
    numbered_lines,
    run_cli,
    run_dirs,
    run_ok,
    summary_of,
    write_lines,
)
from faultkit import (
    ITEMS,
    WORKERS,
    assert_no_traceback,
    job_args,
    load_problems,
    only_run_dir,
    read_manifest,
    rerun_ok,
    state_left,
    write_module,
)

from asyncproc.storage.faults import CRASH_EXIT, POINTS, RETRY_POINTS
from asyncproc.storage.unitstore import NO_CHECKPOINT

# Every point the engine names, in commit-protocol order. A point added to the engine
# without being added here fails test_points_are_all_covered.
COVERED_POINTS = (
    "before_first_commit",
    "segment_write",
    "write_checkpoint",
    "write_index",
    "before_rename_index",
    "after_rename_index",
    "write_manifest",
    "after_data_fsync",
    "before_rename_checkpoint",
    "after_rename_checkpoint",
    "before_rename_manifest",
    "after_rename_manifest",
    "split_capped",
    "split_recorded",
    "before_rename_output",
    "after_output",
    "before_clear",
    "after_clear",
    "after_completed",
)

# The points a clean run with no failed items passes only once (one line index, one
# output file, one clean-up); every other point is passed again by the second commit of
# some unit, or (split points, on the skewed job) by its second split.
PASSED_ONCE = frozenset({
    "write_index", "before_rename_index", "after_rename_index",
    "before_rename_output", "after_output", "before_clear", "after_clear", "after_completed",
})  # fmt: skip

INJECTED_ERRORS = (
    "segment_write:2:ENOSPC",
    "write_checkpoint:2:EIO",
    "before_rename_output:1:ENOSPC",
)


# Points a run passes only when it splits a unit: the skewed job makes sure it does.
SPLIT_POINTS = ("split_capped", "split_recorded")

# The first third of the items is slow, the rest instant: units 1 and 2 finish while
# unit 0 has most of its items left, so both their slots split unit 0 (two splits).
SKEWED = """
import anyio


async def work(item):
    if int(item.split()[1]) < 1000:
        await anyio.sleep(0.003)
    return {"item": item}
"""


class Job:
    """An input, the extra arguments of its job, and the bytes a clean run makes of it."""

    def __init__(self, source: Path, clean: bytes, extra: tuple[str, ...] = ()) -> None:
        self.source = source
        self.clean = clean
        self.extra = extra

    def args(self, output: Path, ck: Path) -> list[str | os.PathLike[str]]:
        return job_args(self.source, output, ck, *self.extra)


@pytest.fixture(scope="module")
def skewed_job(tmp_path_factory: pytest.TempPathFactory) -> Job:
    base = tmp_path_factory.mktemp("skewed_job")
    source = write_lines(base / "input.txt", numbered_lines(ITEMS))
    processor = write_module(base / "skewed.py", SKEWED)
    extra = ("--processor", f"{processor}:work", "--workers", "3", "--concurrency", "16")
    output = base / "clean" / "result.json"
    output.parent.mkdir()
    summary = run_ok(*job_args(source, output, base / "ck_clean", *extra))
    assert summary["units"] >= 5, f"the skewed job should split a unit twice: {summary}"
    return Job(source, output.read_bytes(), extra)


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Job:
    base = tmp_path_factory.mktemp("fault_job")
    source = write_lines(base / "input.txt", numbered_lines(ITEMS))
    output = base / "clean" / "result.json"
    output.parent.mkdir()
    summary = run_ok(*job_args(source, output, base / "ck_clean"))
    assert summary["processed"] == ITEMS and summary["workers"] == WORKERS, summary
    clean = output.read_bytes()
    assert clean == expected_text_stats_array(source.read_bytes())
    return Job(source, clean)


def _paths(tmp_path: Path) -> tuple[Path, Path]:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    return out_dir / "result.json", tmp_path / "ck"


def _assert_finished_like_clean(
    summary: dict[str, object], output: Path, ck: Path, job: Job
) -> None:
    assert summary["status"] == "completed", summary
    assert summary["total_items"] == ITEMS, summary
    assert summary["processed"] == ITEMS, summary
    assert summary["failed"] == 0, summary
    assert summary["checkpoint_cleared"] is True, summary
    assert output.read_bytes() == job.clean, "output differs from a clean run"
    assert sorted(p.name for p in output.parent.iterdir()) == [output.name], (
        "temporary or failed-items files left beside the output"
    )
    run_dir = ck / str(summary["run_id"])
    assert state_left(run_dir) == ["lock", "manifest.json"], "checkpoint state not cleared"


def test_points_are_all_covered() -> None:
    # The points of --retry-failed are covered by tests/test_retry_crash.py.
    assert tuple(POINTS) == (*COVERED_POINTS, *RETRY_POINTS), (
        "the engine's fault points changed; cover the new ones in this file"
    )
    assert len(set(POINTS)) == len(POINTS)


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("point", COVERED_POINTS)
def test_crash_at_point_then_resume(
    point: str, n: int, job: Job, skewed_job: Job, tmp_path: Path
) -> None:
    if point in SPLIT_POINTS:
        job = skewed_job
    output, ck = _paths(tmp_path)
    args = job.args(output, ck)
    crashed = run_cli(*args, env={"ASYNCPROC_CRASH_AT": f"{point}:{n}"})
    assert_no_traceback(crashed)
    if n == 2 and point in PASSED_ONCE:
        # The point is passed fewer than n times: the run finishes untouched.
        _assert_finished_like_clean(summary_of(crashed), output, ck, job)
        return
    assert crashed.returncode == CRASH_EXIT, describe(crashed, f"expected exit {CRASH_EXIT}")
    assert f"crash point {point} reached" in crashed.stderr, describe(crashed)
    assert crashed.stdout.strip() == "", describe(crashed, "no summary after a crash")

    planned = [r for r in run_dirs(ck) if (r / "manifest.json").is_file()]
    summary, _ = rerun_ok(args)
    _assert_finished_like_clean(summary, output, ck, job)
    if planned:
        # A run whose manifest made it to disk is resumed, not started over.
        assert [r.name for r in planned] == [summary["run_id"]], (planned, summary)
        assert summary["resumed"] is True, summary


@pytest.mark.parametrize("spec", INJECTED_ERRORS)
def test_injected_io_error_then_resume(spec: str, job: Job, tmp_path: Path) -> None:
    name = spec.rpartition(":")[2]
    output, ck = _paths(tmp_path)
    args = job_args(job.source, output, ck)
    failed = run_cli(*args, env={"ASYNCPROC_CRASH_AT": spec})
    assert_no_traceback(failed)
    assert failed.returncode == 1, describe(failed, "an I/O error should exit 1")
    errors = error_lines(failed.stderr)
    assert len(errors) == 1, describe(failed, "expected exactly one 'asyncproc: error:' line")
    assert os.strerror(getattr(errno, name)) in errors[0], describe(
        failed, f"the error line should say what failed ({name})"
    )
    assert failed.stdout.strip() == "", describe(failed, "no summary after an error")
    assert not output.exists(), "an I/O error before the merge finished must leave no output"

    # Every shard still has a checkpoint that loads without falling back.
    run_dir = only_run_dir(ck)
    manifest = read_manifest(run_dir)
    assert manifest.status.value in ("failed", "running"), manifest.status
    # A shard whose very first checkpoint write failed has data but no checkpoint yet:
    # that is said, and the shard is redone; anything else would be a real problem.
    problems = load_problems(run_dir)
    assert all(p in ((), (NO_CHECKPOINT,)) for p in problems.values()), problems

    summary, _ = rerun_ok(args)
    assert summary["resumed"] is True, summary
    assert summary["run_id"] == run_dir.name, summary
    _assert_finished_like_clean(summary, output, ck, job)
