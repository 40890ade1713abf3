"""``--processes``: the same bytes as one process, whoever is SIGKILLed and whenever.

Real subprocesses throughout: the parent ``asyncproc run`` and its ``asyncproc.processes.child``
workers. Kill moments are random (seeded, printed, fixable with ASYNCPROC_TEST_SEED);
the tests wait for observable state (child pids, checkpoint files), never for timing.
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
    cli_command,
    error_lines,
    numbered_lines,
    run_cli,
    run_ok,
    write_lines,
)

ITEMS = 12_000
POLL = 0.01


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


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL)


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
    return any(ck.glob("run_*/units/*.ckpt"))


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


def test_sigkill_of_the_parent_kills_children_and_resume_is_exact(
    tmp_path: Path, source: Path, expected: bytes
) -> None:
    seed = int(os.environ.get("ASYNCPROC_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    out, ck = tmp_path / "out.json", tmp_path / "ck"
    for _ in range(2):
        with _popen(_args(source, out, ck, 2)) as proc:
            _wait_for(lambda: len(_children(proc.pid)) == 2, "two worker processes")
            children = _children(proc.pid)
            time.sleep(rng.uniform(0.0, 0.8))  # the randomness of the kill moment
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=CLI_TIMEOUT)
        _wait_for(_gone(children), f"children {children} of a killed parent to die")
    if not out.exists():
        run_ok(*_args(source, out, ck, 2))
    assert out.read_bytes() == expected, f"seed {seed}"


def test_sigkill_of_one_child_fails_cleanly_then_resume_is_exact(
    tmp_path: Path, source: Path, expected: bytes
) -> None:
    out, ck = tmp_path / "out.json", tmp_path / "ck"
    with _popen(_args(source, out, ck, 2)) as proc:
        _wait_for(lambda: len(_children(proc.pid)) == 2 and _committed(ck), "a commit")
        children = _children(proc.pid)
        os.kill(children[0], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=CLI_TIMEOUT)
    assert proc.returncode == 1, stderr
    lines = error_lines(stderr.decode())
    assert len(lines) == 1 and "killed by signal 9" in lines[0], stderr
    assert "run the same command again to resume" in lines[0]
    _wait_for(_gone(children), "the other child to die")
    summary = run_ok(*_args(source, out, ck, 2))
    assert summary["resumed"] is True
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
        _wait_for(lambda: len(_children(proc.pid)) == 2 and _committed(ck), "a commit")
        children = _children(proc.pid)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=CLI_TIMEOUT)
    assert proc.returncode == 128 + signal.SIGINT, stderr
    assert len(error_lines(stderr.decode())) == 1, stderr
    _wait_for(_gone(children), "the children to exit")
    summary = run_ok(*_args(source, out, ck, 2))
    assert summary["resumed"] is True
    assert out.read_bytes() == expected
