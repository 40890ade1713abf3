"""``--retry-failed`` is checkpointed like a run: crash it anywhere, run it again, same bytes.

Every test counts the processor's calls (one line per call in a call log), so a resumed
retry is proven to have skipped what was committed, and compares bytes with a run in
which the items never failed (or in which only the items still failing failed).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from conftest import (
    CLI_TIMEOUT,
    EXIT_ITEMS_FAILED,
    cli_command,
    describe,
    error_lines,
    logging_processor,
    run_cli,
    run_ok,
    summary_of,
)
from faultkit import assert_no_traceback, only_run_dir, state_left

from asyncproc.runs.rundir import local_run
from asyncproc.storage.faults import CRASH_EXIT, RETRY_POINTS
from asyncproc.storage.records import UnitCheckpoint
from asyncproc.storage.subfolder import Subfolder
from asyncproc.storage.unitstore import UnitStore

ITEMS = 1000
FAILED = 100  # FLAKY=all: every tenth item
STILL = 10  # FLAKY=some: every hundredth item, still failing after a retry
RETRY_BATCH = 10

PROCESSOR = logging_processor(
    """
import asyncproc


async def fn(item):
    log_call(item)
    index = asyncproc.current_item().index
    delay = float(os.environ.get("DELAY", "0"))
    if delay:  # up to DELAY seconds, spread so that items finish out of order
        await anyio.sleep(delay * (index * 7919 % 10 + 1) / 10)
    mode = os.environ.get("FLAKY", "")
    if mode == "every" or (mode == "all" and index % 10 == 7):
        raise ValueError(f"flaky on {item}")
    if mode in ("all", "some") and index % 100 == 17:
        raise ValueError(f"still flaky on {item}")
    return {"text": item, "n": len(item)}
"""
)

# Points a retry passes in each invocation (counted), and whether every item of the
# retry is committed when it is reached.
PUBLISH_POINTS = (
    "retry_before_publish",
    "retry_after_output",
    "retry_after_failed_file",
    "retry_before_clear",
)
COVERED = ("retry_planned", "retry_committed", *PUBLISH_POINTS)


@dataclass(frozen=True)
class Job:
    """An input, a processor, and the bytes of the runs to compare with."""

    base: Path
    source: Path
    module: Path
    clean: bytes  # no item ever failed
    some: bytes  # only the FLAKY=some items failed
    some_failed: bytes  # and their failed-items file

    def args(self, out: Path, ck: Path, *extra: str) -> list[str]:
        return ["run", "--input", str(self.source), "--output", str(out), "--checkpoint",
                str(ck), "--processor", f"{self.module}:fn", "--retries", "0", "--workers",
                "2", "--batch-size", "100", "-q", *extra]  # fmt: skip


def _env(log: Path, **extra: str) -> dict[str, str]:
    return {"ASYNCPROC_TEST_CALL_LOG": str(log), **extra}


def _calls(log: Path) -> int:
    return len(log.read_bytes().splitlines()) if log.exists() else 0


def _failed_file(out: Path) -> Path:
    return out.with_name(f"{out.stem}.failed.jsonl")


def _write_input(path: Path, n: int) -> Path:
    path.write_text("".join(f"item {i:06d} of the retry tests\n" for i in range(n)))
    return path


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Job:
    base = tmp_path_factory.mktemp("retry_job")
    source = _write_input(base / "input.txt", ITEMS)
    module = base / "flaky.py"
    module.write_text(PROCESSOR)
    draft = Job(base, source, module, b"", b"", b"")
    outputs = {}
    for mode in ("", "some"):
        out = base / f"ref-{mode or 'clean'}" / "out.json"
        out.parent.mkdir()
        argv = draft.args(out, out.parent / "ck")
        summary = run_ok(*argv, env=_env(base / "log", FLAKY=mode))
        assert summary["failed"] == (STILL if mode else 0), summary
        outputs[mode] = out
    some = outputs["some"]
    return Job(base, source, module, outputs[""].read_bytes(), some.read_bytes(),
               _failed_file(some).read_bytes())  # fmt: skip


def _failed_run(job: Job, tmp_path: Path) -> tuple[Callable[..., list[str]], Path, Path]:
    """A completed run with FAILED failed items; returns its argv maker, output, ck dir."""
    out, ck = tmp_path / "out.json", tmp_path / "ck"
    first = run_ok(*job.args(out, ck), env=_env(tmp_path / "log0", FLAKY="all"))
    assert (first["processed"], first["failed"]) == (ITEMS - FAILED, FAILED), first

    def retry_args(*extra: str) -> list[str]:
        return [*job.args(out, ck), "--retry-failed", "--batch-size", str(RETRY_BATCH), *extra]

    return retry_args, out, ck


def _retry_checkpoint(run_dir: Path) -> UnitCheckpoint | None:
    """The retry's newest good checkpoint, as a resume would load it."""
    return UnitStore(Subfolder(local_run(run_dir).storage, "retry/"), 0).load().checkpoint


def test_retry_points_are_all_covered() -> None:
    assert tuple(RETRY_POINTS) == COVERED


def _expected_resume_calls(checkpoint: UnitCheckpoint | None) -> int:
    """Processor calls of the rerun: the items not committed before the crash, or, when
    the interrupted retry only had its publication left, a new pass over those still
    failing."""
    done = 0 if checkpoint is None else checkpoint.processed + checkpoint.failed
    return STILL if done == FAILED else FAILED - done


@pytest.mark.parametrize(
    ("point", "n"), [(p, 1) for p in COVERED] + [("retry_committed", 2)]
)  # fmt: skip
def test_crash_at_retry_point_then_retry_again(
    point: str, n: int, job: Job, tmp_path: Path
) -> None:
    retry_args, out, ck = _failed_run(job, tmp_path)
    run_dir = only_run_dir(ck)
    crash = _env(tmp_path / "log1", FLAKY="some", ASYNCPROC_CRASH_AT=f"{point}:{n}",
                 DELAY="0.01")  # fmt: skip
    # Two lanes and a delay: commits land mid-retry, several of them.
    crashed = run_cli(*retry_args("--concurrency", "2"), env=crash)
    assert_no_traceback(crashed)
    assert crashed.returncode == CRASH_EXIT, describe(crashed, f"expected exit {CRASH_EXIT}")
    assert f"crash point {point} reached" in crashed.stderr, describe(crashed)
    assert (run_dir / "retry" / "retry.json").is_file(), "the retry left no state to go on with"
    checkpoint = _retry_checkpoint(run_dir)
    if point == "retry_planned":
        assert checkpoint is None, checkpoint
    elif point == "retry_committed":  # mid-retry: some items committed, not all
        assert checkpoint is not None and checkpoint.generation == n, checkpoint
        assert 0 < checkpoint.next_index < FAILED, checkpoint
    else:  # every item committed: only the publication was left
        assert checkpoint is not None and checkpoint.next_index == FAILED, checkpoint

    resumed = run_ok(*retry_args(), env=_env(tmp_path / "log2", FLAKY="some"))
    assert (resumed["processed"], resumed["failed"]) == (ITEMS - STILL, STILL), resumed
    assert _calls(tmp_path / "log2") == _expected_resume_calls(checkpoint)
    assert out.read_bytes() == job.some, "output differs from a run where only those failed"
    assert _failed_file(out).read_bytes() == job.some_failed, "failed-items file differs"
    assert state_left(run_dir) == ["lock", "manifest.json"], "retry state not cleared"

    final = run_ok(*retry_args(), env=_env(tmp_path / "log3"))
    assert (final["processed"], final["failed"], final["failed_items_file"]) == (
        ITEMS, 0, None,
    ), final  # fmt: skip
    assert _calls(tmp_path / "log3") == STILL
    assert out.read_bytes() == job.clean, "output differs from a clean run"
    assert not _failed_file(out).exists()
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")], "temp files"


@pytest.mark.parametrize("spec", ["segment_write:2:ENOSPC", "write_checkpoint:2:EIO"])
def test_an_io_error_mid_retry_stops_it_cleanly_then_it_resumes(
    spec: str, job: Job, tmp_path: Path
) -> None:
    retry_args, out, ck = _failed_run(job, tmp_path)
    fault = _env(tmp_path / "log1", ASYNCPROC_CRASH_AT=spec, DELAY="0.01")
    failed = run_cli(*retry_args("--concurrency", "2"), env=fault)
    assert_no_traceback(failed)
    assert failed.returncode == 1, describe(failed, "an I/O error should exit 1")
    errors = error_lines(failed.stderr)
    name = spec.rpartition(":")[2]
    assert len(errors) == 1 and os.strerror(getattr(errno, name)) in errors[0], describe(failed)
    checkpoint = _retry_checkpoint(only_run_dir(ck))
    assert checkpoint is not None and 0 < checkpoint.next_index < FAILED, checkpoint
    assert _failed_file(out).exists(), "the failed-items file went before the retry finished"

    resumed = run_ok(*retry_args(), env=_env(tmp_path / "log2"))
    assert (resumed["processed"], resumed["failed"]) == (ITEMS, 0), resumed
    assert _calls(tmp_path / "log2") == FAILED - checkpoint.next_index
    assert out.read_bytes() == job.clean


def test_items_still_failing_stay_in_input_order_with_their_new_errors(
    job: Job, tmp_path: Path
) -> None:
    retry_args, out, _ = _failed_run(job, tmp_path)
    before = [orjson.loads(line) for line in _failed_file(out).read_bytes().splitlines()]
    assert all(letter["error"].startswith("flaky on") for letter in before if
               letter["index"] % 100 != 17)  # fmt: skip
    # Many lanes, tiny batches: results finish out of order and commit in many pieces.
    again = run_cli(*retry_args("--concurrency", "7"),
                    env=_env(tmp_path / "log", FLAKY="some", DELAY="0.001"),
                    check=EXIT_ITEMS_FAILED)  # fmt: skip
    assert summary_of(again)["failed"] == STILL
    still = [orjson.loads(line) for line in _failed_file(out).read_bytes().splitlines()]
    assert [d["index"] for d in still] == [i for i in range(ITEMS) if i % 100 == 17]
    assert all(d["error"] == f"still flaky on {d['item']}" and d["attempts"] == 1 for d in still)
    assert _failed_file(out).read_bytes() == job.some_failed
    assert out.read_bytes() == job.some


def _kill_when_committed(argv: list[str], env: dict[str, str], run_dir: Path, at: int) -> int:
    """Start a retry and SIGKILL it once its checkpoint has ``at`` items; the items then."""
    full_env = {**os.environ, **env}
    proc = subprocess.Popen(cli_command(*argv), env=full_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + CLI_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            checkpoint = _retry_checkpoint(run_dir)
            if checkpoint is not None and checkpoint.next_index >= at:
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
        assert proc.wait(timeout=CLI_TIMEOUT) == -signal.SIGKILL, "the retry was not killed"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    killed_at = _retry_checkpoint(run_dir)
    assert killed_at is not None
    return killed_at.next_index


def test_sigkill_mid_retry_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    n = 10_000
    source = _write_input(tmp_path / "input.txt", n)
    module = tmp_path / "flaky.py"
    module.write_text(PROCESSOR)
    job = Job(tmp_path, source, module, b"", b"", b"")
    out, ck = tmp_path / "out.jsonl", tmp_path / "ck"
    first = run_cli(
        *job.args(out, ck),
        "--early-stop",
        "0",  # every item fails, on purpose
        env=_env(tmp_path / "log0", FLAKY="every"),
        check=EXIT_ITEMS_FAILED,
    )
    assert summary_of(first)["failed"] == n
    retry = [*job.args(out, ck), "--retry-failed", "--batch-size", "100", "--concurrency", "8"]
    committed = _kill_when_committed(
        retry, _env(tmp_path / "log1", DELAY="0.002"), only_run_dir(ck), n // 5
    )
    assert n // 5 <= committed < n, committed

    resumed = run_ok(*retry, env=_env(tmp_path / "log2"))
    assert (resumed["processed"], resumed["failed"]) == (n, 0), resumed
    assert _calls(tmp_path / "log2") == n - committed, "committed items were processed again"
    seen = set((tmp_path / "log1").read_text().splitlines())
    seen |= set((tmp_path / "log2").read_text().splitlines())
    assert len(seen) == n, "some failed item was never retried"

    clean_out = tmp_path / "clean.jsonl"
    run_cli(*job.args(clean_out, tmp_path / "ck-clean"), env=_env(tmp_path / "log3"), check=0)
    assert out.read_bytes() == clean_out.read_bytes()
    assert not _failed_file(out).exists()


@pytest.mark.parametrize("damage", ["failed-file-touched", "plan-corrupt"])
def test_an_interrupted_retry_that_cannot_go_on_is_started_over_loudly(
    damage: str, job: Job, tmp_path: Path
) -> None:
    retry_args, out, ck = _failed_run(job, tmp_path)
    run_dir = only_run_dir(ck)
    crash = _env(tmp_path / "log1", ASYNCPROC_CRASH_AT="retry_committed:2", DELAY="0.01")
    run_cli(*retry_args("--concurrency", "2"), env=crash, check=CRASH_EXIT)
    committed = _retry_checkpoint(run_dir)
    assert committed is not None and 0 < committed.next_index < FAILED, committed
    if damage == "failed-file-touched":
        stat = _failed_file(out).stat()
        os.utime(_failed_file(out), ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        said = "the interrupted retry cannot go on (modification time)"
    else:
        (run_dir / "retry" / "retry.json").write_bytes(b"{torn")
        said = "retry plan of run"

    again = run_cli(*retry_args(), env=_env(tmp_path / "log2"), check=0)
    assert said in again.stderr, describe(again)
    assert _calls(tmp_path / "log2") == FAILED, "a retry started over retries every item"
    assert out.read_bytes() == job.clean
    assert state_left(run_dir) == ["lock", "manifest.json"]
