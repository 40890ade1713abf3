"""``--processes``: the same bytes as one process, whoever is SIGKILLed and whenever.

Real subprocesses throughout: the parent ``asyncproc run`` and its ``asyncproc.processes.child``
workers. Kill moments are random (seeded, printed, fixable with ASYNCPROC_TEST_SEED)
within a short while after a commit, and each kill is then shown to have landed mid-run;
otherwise the tests wait for observable state (child pids, checkpoint files), never for
timing.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import (
    CLI_TIMEOUT,
    checkpoint_files,
    cli_command,
    committed_since,
    error_lines,
    numbered_lines,
    run_cli,
    run_dirs,
    run_ok,
    run_status,
    wait_until,
    write_lines,
)

ITEMS = 12_000
KILL_WITHIN = 0.25  # seconds after an attempt's first commit: well before the run could end


def _args(source: Path, output: Path, ck: Path, processes: int) -> list[str | os.PathLike[str]]:
    return [
        "run", "--input", source, "--output", output, "--checkpoint", ck,
        "--processor", "sleep", "--processor-arg", "latency=0.004", "--workers", "4",
        "--concurrency", "48", "--batch-size", "50", "--processes", str(processes), "-q",
    ]  # fmt: skip


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "input.txt", numbered_lines(ITEMS))


@pytest.fixture
def expected(tmp_path: Path, source: Path) -> bytes:
    out = tmp_path / "clean" / "out.json"
    out.parent.mkdir()
    run_ok(*_args(source, out, tmp_path / "clean" / "ck", 1))
    return out.read_bytes()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _gone(pids: list[int]) -> Callable[[], bool]:
    def check() -> bool:
        for pid in pids:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[0] != "Z":
                return False
        return True

    return check


def _committed(ck: Path) -> bool:
    return bool(checkpoint_files(ck))


def _popen(args: list[str | os.PathLike[str]]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cli_command(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_two_processes_give_the_same_bytes(tmp_path: Path, source: Path, expected: bytes) -> None:
    out = tmp_path / "two" / "out.json"
    out.parent.mkdir()
    summary = run_ok(*_args(source, out, tmp_path / "two" / "ck", 2))
    assert summary["processed"] == ITEMS
    assert out.read_bytes() == expected


def _kill_parent_mid_run(args: list[str | os.PathLike[str]], ck: Path, delay: float) -> None:
    """Start a run; once both children run and it has committed a checkpoint of its own,
    SIGKILL the parent ``delay`` s later. The run must still be going then."""
    before = checkpoint_files(ck)
    with _popen(args) as proc:
        wait_until(
            lambda: len(_children(proc.pid)) == 2 and committed_since(ck, before),
            "two worker processes and a commit",
            proc,
        )
        children = _children(proc.pid)
        time.sleep(delay)  # the randomness of the kill moment, not synchronisation
        assert proc.poll() is None, f"the run ended ({proc.returncode}) before the kill"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=CLI_TIMEOUT)
    assert proc.returncode == -signal.SIGKILL, proc.returncode
    wait_until(_gone(children), f"children {children} of a killed parent to die")


def test_sigkill_of_the_parent_kills_children_and_resume_is_exact(
    tmp_path: Path, source: Path, expected: bytes
) -> None:
    seed = int(os.environ.get("ASYNCPROC_TEST_SEED", random.randrange(1 << 30)))
    print(f"ASYNCPROC_TEST_SEED={seed}")
    rng = random.Random(seed)
    out, ck = tmp_path / "out.json", tmp_path / "ck"
    args = _args(source, out, ck, 2)
    for attempt in range(2):
        # Each kill lands mid-run: after a commit of its own, before the run ended.
        _kill_parent_mid_run(args, ck, rng.uniform(0.0, KILL_WITHIN))
        assert not out.exists(), f"seed {seed}: attempt {attempt} got as far as the output"
    status = run_status(ck)
    assert status["status"] == "interrupted", (seed, status)
    assert 0 < status["processed"] < ITEMS, (seed, status)
    summary = run_ok(*args)
    assert summary["resumed"] is True, (seed, summary)
    assert [r.name for r in run_dirs(ck)] == [summary["run_id"]], f"seed {seed}: one run"
    assert summary["processed"] == ITEMS, (seed, summary)
    assert out.read_bytes() == expected, f"seed {seed}"


def test_sigkill_of_one_child_the_run_goes_on_exactly(
    tmp_path: Path, source: Path, expected: bytes
) -> None:
    """A child SIGKILLed mid-run: its units are rerun (carefully, then by a new child) in
    the same invocation, and the bytes are exact (before: the run failed)."""
    out, ck = tmp_path / "out.json", tmp_path / "ck"
    with _popen(_args(source, out, ck, 2)) as proc:
        wait_until(lambda: len(_children(proc.pid)) == 2 and _committed(ck), "a commit", proc)
        children = _children(proc.pid)
        os.kill(children[0], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=CLI_TIMEOUT)
    assert proc.returncode == 0, stderr
    assert b"ended (signal 9); rerunning" in stderr, stderr
    assert out.read_bytes() == expected


def test_child_stdout_prints_do_not_break_the_protocol(tmp_path: Path) -> None:
    processor = tmp_path / "noisy.py"
    processor.write_text("async def noisy(item):\n    print('hello', item)\n    return item\n")
    source = write_lines(tmp_path / "in.txt", [f"x{i}" for i in range(200)])
    outs = []
    for processes in ("1", "2"):
        out = tmp_path / f"out{processes}.jsonl"
        run_cli(
            "run", "--input", source, "--output", out, "--processor", f"{processor}:noisy",
            "--processes", processes, "--workers", "2", "-q", check=0,
        )  # fmt: skip
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_processes_must_be_positive(tmp_path: Path, source: Path) -> None:
    proc = run_cli(*_args(source, tmp_path / "o.json", tmp_path / "ck", 0))
    assert proc.returncode == 2
    assert "--processes must be at least 1" in proc.stderr


def test_sigint_stops_children_gracefully_then_resume_is_exact(
    tmp_path: Path, source: Path, expected: bytes
) -> None:
    out, ck = tmp_path / "out.json", tmp_path / "ck"
    with _popen(_args(source, out, ck, 2)) as proc:
        wait_until(lambda: len(_children(proc.pid)) == 2 and _committed(ck), "a commit", proc)
        children = _children(proc.pid)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=CLI_TIMEOUT)
    assert proc.returncode == 128 + signal.SIGINT, stderr
    assert len(error_lines(stderr.decode())) == 1, stderr
    wait_until(_gone(children), "the children to exit")
    summary = run_ok(*_args(source, out, ck, 2))
    assert summary["resumed"] is True
    assert out.read_bytes() == expected


def test_children_with_no_work_leave_quietly(tmp_path: Path) -> None:
    """A rerun of a finished run starts children that get no setup: they leave without a
    word (before: each printed an orjson traceback in a run that exited 0)."""
    source = write_lines(tmp_path / "in.txt", numbered_lines(200))
    args: list[str | os.PathLike[str]] = [
        "run", "--input", source, "--output", tmp_path / "out.jsonl", "--checkpoint",
        tmp_path / "ck", "--processes", "2",
    ]  # fmt: skip
    run_ok(*args)
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "already completed" in again.stderr, again.stderr  # the children got no run
    assert "Traceback" not in again.stderr and "orjson" not in again.stderr, again.stderr
