"""Test hooks stay out of production: faults are armed through a seam, messages per context.

A stray ``ASYNCPROC_CRASH_AT`` must not crash a library run: only the command line reads
it, at its start, and then says on stderr that fault injection is on. Whether messages
name command-line flags is a context variable, not a process-wide flag.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from conftest import describe, numbered_lines, run_cli, summary_of, write_lines
from faultkit import refused

from asyncproc._errors import cli_messages, named, speaking_cli
from asyncproc.storage import faults
from asyncproc.storage.faults import CRASH_EXIT

TIMEOUT = 60
LIBRARY_RUN = """
import sys
import asyncproc

summary = asyncproc.run_file(sys.argv[1], sys.argv[2], "text_stats", checkpoint_dir=sys.argv[3])
print(summary.processed)
"""


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "in.txt", numbered_lines(50))


def test_a_stray_variable_does_not_crash_a_library_run(source: Path, tmp_path: Path) -> None:
    out, ck = tmp_path / "out.jsonl", tmp_path / "ck"
    env = {"ASYNCPROC_CRASH_AT": "before_first_commit:1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(LIBRARY_RUN), source, out, ck],
        env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, describe(proc, "the library run should ignore the variable")
    assert proc.stdout.split() == ["50"], describe(proc)
    assert "crash point" not in proc.stderr and "fault injection" not in proc.stderr


def test_the_command_line_says_fault_injection_is_on(source: Path, tmp_path: Path) -> None:
    args = ("run", "--input", source, "--output", tmp_path / "out.jsonl", "-q")
    armed = run_cli(*args, env={"ASYNCPROC_CRASH_AT": "after_completed:99"}, check=0)
    assert summary_of(armed)["processed"] == 50
    notice = "fault injection is on (ASYNCPROC_CRASH_AT=after_completed:99)"
    assert notice in armed.stderr, describe(armed)
    clean = run_cli(*args, "--new-run", check=0)
    assert "fault injection" not in clean.stderr, describe(clean)


def test_the_command_line_crashes_where_armed(source: Path, tmp_path: Path) -> None:
    args = ("run", "--input", source, "--output", tmp_path / "out.jsonl", "-q")
    crashed = run_cli(*args, env={"ASYNCPROC_CRASH_AT": "before_first_commit:1"})
    assert crashed.returncode == CRASH_EXIT, describe(crashed)
    assert "crash point before_first_commit reached" in crashed.stderr, describe(crashed)


def test_a_bad_fault_spec_is_one_line(source: Path, tmp_path: Path) -> None:
    args = ("run", "--input", source, "--output", tmp_path / "out.jsonl")
    bad = run_cli(*args, env={"ASYNCPROC_CRASH_AT": "segment_write:x"})
    refused(bad, 2, "ASYNCPROC_CRASH_AT", "segment_write:x", "unset it")
    typo = run_cli(*args, env={"ASYNCPROC_CRASH_AT": "segment_wrote:1"})
    refused(typo, 2, "'segment_wrote' is not a fault point")
    assert not (tmp_path / "out.jsonl").exists()


def test_arm_replaces_and_disarms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults, "_armed", {})
    monkeypatch.setattr(faults, "_spec", [""])
    faults.arm("segment_write:2:EIO")
    assert faults.armed_spec() == "segment_write:2:EIO"
    faults.crashpoint("segment_write")  # the first pass is let through
    with pytest.raises(OSError, match="injected at segment_write"):
        faults.crashpoint("segment_write")
    faults.arm("segment_write:1:EIO")
    faults.arm("")
    faults.crashpoint("segment_write")  # disarmed
    assert faults.armed_spec() == ""


def test_cli_messages_hold_only_in_their_own_context() -> None:
    """A command line speaking flags in one thread leaves a library call's names alone."""
    inside, release = threading.Event(), threading.Event()
    seen: list[str] = []

    def command() -> None:
        with cli_messages():
            seen.append(named("batch_size"))
            inside.set()
            release.wait(TIMEOUT)

    thread = threading.Thread(target=command)
    thread.start()
    try:
        assert inside.wait(TIMEOUT), "the command thread never entered its context"
        assert named("batch_size") == "batch_size" and not speaking_cli()
    finally:
        release.set()
        thread.join(TIMEOUT)
    assert seen == ["--batch-size"]


def test_worker_processes_are_armed_by_their_parent(source: Path, tmp_path: Path) -> None:
    """The children never read the variable: the parent hands them its spec on the wire."""
    args = ("run", "--input", source, "--output", tmp_path / "out.jsonl", "--processes", "2")
    crashed = run_cli(*args, env={"ASYNCPROC_CRASH_AT": "before_first_commit:1"})
    assert "crash point before_first_commit reached" in crashed.stderr, describe(crashed)
    refused(crashed, 1, "worker process", "exited with code 3")
