"""A processor that forks and lets its child return: the child leaves, the run finishes.

The forked child holds copies of the run's pipes and, on the loop, of its state; it must
never touch the run. Before the fix a sync processor's child sat in the thread pool
forever holding stdout open (the caller never saw EOF), and an async one's child went
on running the lanes of the parent's run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import cli_command, describe, numbered_lines, run_args, summary_of, write_lines
from faultkit import assert_no_traceback, write_module

FORKING = """
    import os

    def forks(item):
        if item.startswith("line 000007 "):
            os.fork()  # parent and child both return the item
        return item

    async def forks_async(item):
        if item.startswith("line 000007 "):
            os.fork()
        return item
"""


def _run_to_eof(args: list[str | os.PathLike[str]], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the CLI and wait for its stdout to close: a lingering child keeps it open."""
    proc = subprocess.Popen(
        cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=cwd, start_new_session=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"the run's stdout never closed\n{out}\n{err}") from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # any child left behind
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("function", ["forks", "forks_async"])
@pytest.mark.parametrize("processes", [None, "2"])
def test_a_forked_child_leaves_without_touching_the_run(
    tmp_path: Path, function: str, processes: str | None
) -> None:
    write_module(tmp_path / "forking.py", FORKING)
    lines = numbered_lines(500)
    source = write_lines(tmp_path / "in.txt", lines)
    out = tmp_path / "out.jsonl"
    args = [*run_args(source, out, tmp_path / "ck"), "--processor", f"forking.py:{function}"]
    if processes:
        args += ["--processes", processes, "--workers", "2"]
    proc = _run_to_eof(args, tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert_no_traceback(proc)
    assert "forked by the processor, came back" in proc.stderr, describe(proc, "no fork seen")
    summary = summary_of(proc)
    assert summary["processed"] == 500, describe(proc)
    rows = out.read_bytes().splitlines()
    assert len(rows) == 500 and len(set(rows)) == 500, "a child wrote into the run"
