"""Graceful stop, run locks and a run at work, with real subprocesses and real signals.

The processor touches a "started" marker on its first call, so the tests know a run is
working before they signal it; nothing waits on a timer. How it behaves after that is
chosen by environment variables, so every run of a job uses the same processor spec:
``ASYNCPROC_TEST_SLOW`` (seconds per item), ``ASYNCPROC_TEST_HANG`` (never return),
``ASYNCPROC_TEST_HANG_AT`` (the item of this index never returns; it touches the file
``ASYNCPROC_TEST_HANGING`` first), ``ASYNCPROC_TEST_GATE`` (block until this file
exists; only items from index ``ASYNCPROC_TEST_GATE_FROM`` on, 0 by default) and
``ASYNCPROC_TEST_DONE`` (append each item to this file when it finishes).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest
from conftest import (
    change_input,
    checkpoint_files,
    cli_command,
    describe,
    error_lines,
    expected_array,
    numbered_lines,
    run_cli,
    run_ok,
    run_status,
    summary_of,
    text_items,
    wait_until,
    write_lines,
)
from faultkit import (
    assert_no_traceback,
    load_problems,
    only_run_dir,
    read_checkpoint,
    read_manifest,
    write_module,
)

ITEMS = 400
MARKER_TIMEOUT = 30.0
GRACE = 1.0

PROCESSOR = """
import os
from pathlib import Path

import anyio

import asyncproc

STARTED = os.environ.get("ASYNCPROC_TEST_STARTED")
SLOW = float(os.environ.get("ASYNCPROC_TEST_SLOW") or 0)
HANG = os.environ.get("ASYNCPROC_TEST_HANG") == "1"
HANG_AT = int(os.environ.get("ASYNCPROC_TEST_HANG_AT") or -1)
HANGING = os.environ.get("ASYNCPROC_TEST_HANGING")
GATE = os.environ.get("ASYNCPROC_TEST_GATE")
GATE_FROM = int(os.environ.get("ASYNCPROC_TEST_GATE_FROM") or 0)
DONE = os.environ.get("ASYNCPROC_TEST_DONE")


async def work(item):
    index = asyncproc.current_item().index
    if STARTED and not os.path.exists(STARTED):
        Path(STARTED).touch()
    if index == HANG_AT and HANGING:
        Path(HANGING).touch()
    if HANG or index == HANG_AT:
        await anyio.sleep(3600)
    if GATE and index >= GATE_FROM:
        while not os.path.exists(GATE):
            await anyio.sleep(0.01)
    if SLOW:
        await anyio.sleep(SLOW)
    if DONE:  # one O_APPEND write per item: lines never interleave
        fd = os.open(DONE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (item + "\\n").encode("utf-8"))
        finally:
            os.close(fd)
    return {"item": item, "n": len(item)}
"""


class Job:
    def __init__(self, source: Path, processor: Path, clean: bytes) -> None:
        self.source = source
        self.processor = processor
        self.clean = clean

    def args(self, tmp_path: Path, *extra: str, workers: int = 2) -> list[Any]:
        out_dir = tmp_path / "out"
        out_dir.mkdir(parents=True, exist_ok=True)
        return [
            "run", "--input", self.source, "--output", out_dir / "result.json",
            "--checkpoint", tmp_path / "ck", "--processor", f"{self.processor}:work",
            "--workers", str(workers), "--concurrency", "8", "--batch-size", "10", *extra,
        ]  # fmt: skip


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Job:
    base = tmp_path_factory.mktemp("stop_job")
    source = write_lines(base / "input.txt", numbered_lines(ITEMS))
    processor = write_module(base / "stoppable.py", PROCESSOR)
    clean_job = Job(source, processor, b"")
    run_ok(*clean_job.args(base / "clean"))
    clean = (base / "clean" / "out" / "result.json").read_bytes()
    items = text_items(source.read_bytes())
    assert clean == expected_array((i, {"item": s, "n": len(s)}) for i, s in enumerate(items))
    return Job(source, processor, clean)


def _env(extra: Mapping[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@contextmanager
def started(
    args: list[Any], env: Mapping[str, str], stderr: IO[str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """Start ``asyncproc run``; kill it on the way out if the test left it running."""
    proc = subprocess.Popen(
        cli_command(*args),
        stdout=subprocess.PIPE,
        stderr=stderr if stderr is not None else subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=_env(env),
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=MARKER_TIMEOUT)


def _assert_stopped_with_valid_checkpoint(tmp_path: Path) -> int:
    """The run is marked interrupted and every shard's newest checkpoint loads cleanly."""
    run_dir = only_run_dir(tmp_path / "ck")
    assert read_manifest(run_dir).status.value == "interrupted"
    problems = load_problems(run_dir)
    assert all(not p for p in problems.values()), problems
    newest = [
        max((read_checkpoint(p) for p in (run_dir / "units").glob(f"{s:04d}.*.ckpt")),
            key=lambda c: c.generation, default=None)
        for s in problems
    ]  # fmt: skip
    return sum(c.processed + c.failed for c in newest if c is not None)


def _resume_and_compare(job: Job, tmp_path: Path, run_id: str) -> None:
    summary = run_ok(*job.args(tmp_path))
    assert summary["resumed"] is True, summary
    assert summary["run_id"] == run_id, summary
    assert summary["processed"] == ITEMS and summary["failed"] == 0, summary
    assert (tmp_path / "out" / "result.json").read_bytes() == job.clean


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_graceful_stop_commits_and_resumes(
    signum: signal.Signals, code: int, job: Job, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    env = {"ASYNCPROC_TEST_STARTED": str(marker), "ASYNCPROC_TEST_SLOW": "0.2"}
    with started(job.args(tmp_path), env) as proc:
        wait_until(marker.exists, "the first processor call", proc)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=MARKER_TIMEOUT)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert_no_traceback(done)
    assert proc.returncode == code, describe(done, f"{signum.name} should exit {code}")
    assert stdout.strip() == "", describe(done, "no summary after an interrupted run")
    errors = error_lines(stderr)
    assert len(errors) == 1, describe(done, "expected exactly one 'asyncproc: error:' line")
    assert re.search(r"same command|resume", errors[0], re.IGNORECASE), describe(
        done, "the last line should say how to resume"
    )
    who = "you (SIGINT, Ctrl-C)" if signum == signal.SIGINT else "SIGTERM"
    assert errors[0].startswith(f"asyncproc: interrupted by {who}; "), describe(done)
    assert not (tmp_path / "out" / "result.json").exists()
    committed = _assert_stopped_with_valid_checkpoint(tmp_path)
    # The item that touched the marker was in flight: a graceful stop lets it finish
    # and commits it; the run was far from done.
    assert 1 <= committed < ITEMS, committed
    _resume_and_compare(job, tmp_path, only_run_dir(tmp_path / "ck").name)


def test_second_sigint_stops_at_once(job: Job, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    env = {"ASYNCPROC_TEST_STARTED": str(marker), "ASYNCPROC_TEST_HANG": "1"}
    err_path = tmp_path / "stderr.txt"
    # A grace period far longer than the test allows: only the second signal can end it.
    args = job.args(tmp_path, "--grace", "120")
    with err_path.open("w", encoding="utf-8") as err, started(args, env, err) as proc:
        wait_until(marker.exists, "the first processor call", proc)
        proc.send_signal(signal.SIGINT)
        wait_until(
            lambda: "SIGINT" in err_path.read_text(encoding="utf-8"),
            "the run to acknowledge the first SIGINT",
            proc,
        )
        proc.send_signal(signal.SIGINT)
        try:
            stdout, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("a second SIGINT did not stop a hung run within 10 s")
    stderr = err_path.read_text(encoding="utf-8")
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert_no_traceback(done)
    assert proc.returncode == 130, describe(done, "a double SIGINT should exit 130")
    assert len(error_lines(stderr)) == 1, describe(done)
    _assert_stopped_with_valid_checkpoint(tmp_path)
    _resume_and_compare(job, tmp_path, only_run_dir(tmp_path / "ck").name)


def test_second_run_refused_and_killed_holder_does_not_block(job: Job, tmp_path: Path) -> None:
    marker, gate = tmp_path / "started", tmp_path / "gate"
    env = {"ASYNCPROC_TEST_STARTED": str(marker), "ASYNCPROC_TEST_GATE": str(gate)}
    args = job.args(tmp_path)
    with started(args, env) as first:
        wait_until(marker.exists, "the first processor call", first)
        second = run_cli(*args, env=env)
        assert_no_traceback(second)
        assert second.returncode == 1, describe(second, "a second run should be refused")
        errors = error_lines(second.stderr)
        assert len(errors) == 1, describe(second, "expected exactly one error line")
        assert re.search(rf"\bpid\b\D*\b{first.pid}\b", errors[0]), describe(
            second, f"the refusal should name the holder, pid {first.pid}"
        )
        assert second.stdout.strip() == "", describe(second)
        assert first.poll() is None, "the refused run must not disturb the holder"
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=MARKER_TIMEOUT)
    assert first.returncode == -signal.SIGKILL
    run_id = only_run_dir(tmp_path / "ck").name
    gate.touch()
    _resume_and_compare(job, tmp_path, run_id)


def _finished(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    stdout, stderr = proc.communicate(timeout=MARKER_TIMEOUT)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert_no_traceback(done)
    return done


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


HANG_AT = 57  # not a multiple of the batch size: the stop commits a partial batch


def test_grace_runs_out_cancels_hung_items_and_commits_what_finished(
    job: Job, tmp_path: Path
) -> None:
    hanging, done_log = tmp_path / "hanging", tmp_path / "done.log"
    env = {"ASYNCPROC_TEST_HANG_AT": str(HANG_AT), "ASYNCPROC_TEST_HANGING": str(hanging),
           "ASYNCPROC_TEST_DONE": str(done_log)}  # fmt: skip
    items = text_items(job.source.read_bytes())
    args = job.args(tmp_path, "--grace", str(GRACE), workers=1)
    with started(args, env) as proc:
        # Item HANG_AT hangs in flight and every item before it has finished.
        wait_until(
            lambda: hanging.exists() and set(items[:HANG_AT]) <= set(_lines(done_log)),
            f"items 0-{HANG_AT - 1} to finish and item {HANG_AT} to hang",
            proc,
        )
        signalled = time.monotonic()
        proc.send_signal(signal.SIGINT)
        done = _finished(proc)
    took = time.monotonic() - signalled
    assert done.returncode == 130, describe(done, "SIGINT should exit 130")
    # The hung item had --grace to finish, then was cancelled: not an hour, not at once.
    assert GRACE <= took < GRACE + 10, describe(done, f"exited {took:.2f} s after SIGINT")
    assert len(error_lines(done.stderr)) == 1 and done.stdout.strip() == "", describe(done)
    assert not (tmp_path / "out" / "result.json").exists()
    # Everything that finished in order is committed; the cancelled item is no failure.
    status = run_status(tmp_path / "ck")
    assert status["status"] == "interrupted", status
    assert (status["processed"], status["failed"]) == (HANG_AT, 0), status

    again = tmp_path / "again.log"
    summary = run_ok(*args, env={"ASYNCPROC_TEST_DONE": str(again)})
    assert summary["resumed"] is True and summary["processed"] == ITEMS, summary
    assert (tmp_path / "out" / "result.json").read_bytes() == job.clean
    redone = _lines(again)
    assert sorted(redone) == sorted(items[HANG_AT:]), "the resume redid committed items"


GATE_FROM = 25  # items before this index finish at once; the rest wait for the gate


def test_commit_interval_commits_mid_batch_while_the_run_goes_on(job: Job, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    env = {"ASYNCPROC_TEST_GATE": str(gate), "ASYNCPROC_TEST_GATE_FROM": str(GATE_FROM)}
    # No batch can ever fill: only the interval can commit before the end.
    args = job.args(tmp_path, "--batch-size", "1000000", "--commit-interval", "0.2", workers=1)
    with started(args, env) as proc:
        try:
            wait_until(lambda: bool(checkpoint_files(tmp_path / "ck")), "a checkpoint", proc)
            wait_until(
                lambda: run_status(tmp_path / "ck")["processed"] == GATE_FROM,
                f"the {GATE_FROM} finished items to be committed",
                proc,
            )
            status = run_status(tmp_path / "ck")
            assert proc.poll() is None, "the run should still be waiting at the gate"
        finally:
            gate.touch()
        done = _finished(proc)
    assert status["status"] == "running", status
    assert (status["processed"], status["failed"]) == (GATE_FROM, 0), status
    assert done.returncode == 0, describe(done)
    assert summary_of(done)["processed"] == ITEMS
    assert (tmp_path / "out" / "result.json").read_bytes() == job.clean


@pytest.mark.parametrize("how", ["append", "same-size-and-mtime"])
def test_input_changed_during_a_run_refuses_to_merge(how: str, job: Job, tmp_path: Path) -> None:
    source = tmp_path / "input.txt"
    source.write_bytes(job.source.read_bytes())
    mine = Job(source, job.processor, job.clean)
    marker, gate = tmp_path / "started", tmp_path / "gate"
    env = {"ASYNCPROC_TEST_STARTED": str(marker), "ASYNCPROC_TEST_GATE": str(gate)}
    args = mine.args(tmp_path)
    with started(args, env) as proc:
        try:
            wait_until(marker.exists, "the first processor call", proc)
            change_input(source, how)
        finally:
            gate.touch()
        done = _finished(proc)
    assert done.returncode == 1, describe(done, "a changed input should exit 1")
    (line,) = error_lines(done.stderr)
    change = "size" if how == "append" else "contents"
    assert "changed" in line and change in line and "--new-run" in line, describe(done)
    assert str(source) in line, describe(done, "the error should name the input")
    assert done.stdout.strip() == "", describe(done)
    assert not (tmp_path / "out" / "result.json").exists(), "a mixed output was written"

    refused = run_cli(*args, check=1)
    assert "--new-run" in error_lines(refused.stderr)[0], describe(refused)
    fresh = run_ok(*args, "--new-run")
    assert fresh["resumed"] is False, fresh
    expected = expected_array((i, {"item": s, "n": len(s)}) for i, s in
                              enumerate(text_items(source.read_bytes())))  # fmt: skip
    assert (tmp_path / "out" / "result.json").read_bytes() == expected
