"""Processors that hang or block: the run goes on, says why, and the process still ends.

Real subprocesses and real signals. A plain ``def`` that hangs is cut off by
``--timeout``; an ``async def`` that blocks the event loop is named by the watchdog, and
a second signal ends the process even then; a thread the processor leaves running does
not keep the command alive after its summary.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    cli_command,
    describe,
    error_lines,
    numbered_lines,
    run_cli,
    summary_of,
    text_items,
    wait_until,
    write_lines,
)
from faultkit import assert_no_traceback, json_lines, write_module

HANGING = """
import os
import threading
import time
from pathlib import Path

import asyncproc

STARTED = os.environ.get("ASYNCPROC_TEST_STARTED")
AT = int(os.environ.get("ASYNCPROC_TEST_AT") or 3)
SECONDS = float(os.environ.get("ASYNCPROC_TEST_SECONDS") or 3600)


def _at_item():
    if asyncproc.current_item().index != AT:
        return False
    if STARTED:
        Path(STARTED).touch()
    return True


def hang_def(item):
    if _at_item():
        time.sleep(SECONDS)
    return {"item": item}


async def block_loop(item):
    if _at_item():
        time.sleep(SECONDS)  # a blocking call in an async def: the whole loop waits
    return {"item": item}


async def leave_thread(item):
    if _at_item():
        threading.Thread(target=threading.Event().wait, name="left-behind").start()
    return {"item": item}
"""


def _job(tmp_path: Path, fn: str, *extra: str) -> tuple[list[Any], Path]:
    source = write_lines(tmp_path / "input.txt", numbered_lines(20))
    module = write_module(tmp_path / "hanging.py", HANGING)
    output = tmp_path / "out.jsonl"
    args = ["run", "--input", source, "--output", output, "--checkpoint", tmp_path / "ck",
            "--processor", f"{module}:{fn}", "--retries", "0", "--quiet", *extra]  # fmt: skip
    assert len(text_items(source.read_bytes())) == 20
    return args, output


def test_timeout_cuts_off_a_hung_plain_def_and_the_process_ends(tmp_path: Path) -> None:
    args, output = _job(tmp_path, "hang_def", "--timeout", "0.3")
    started = time.monotonic()
    proc = run_cli(*args)
    assert time.monotonic() - started < 30, "the hung call held the process"
    assert_no_traceback(proc)
    assert proc.returncode == 4, describe(proc)  # finished, the hung item failed
    summary = summary_of(proc)
    assert (summary["processed"], summary["failed"]) == (19, 1), summary
    (dead,) = json_lines(tmp_path / "out.failed.jsonl")
    assert (dead["index"], dead["error_type"]) == (3, "ItemTimeoutError"), dead
    assert [r["index"] for r in json_lines(output)] == [i for i in range(20) if i != 3]


def test_the_watchdog_names_the_item_that_blocked_the_loop(tmp_path: Path) -> None:
    args, output = _job(tmp_path, "block_loop")
    env = {"ASYNCPROC_BLOCKED_AFTER": "0.2", "ASYNCPROC_TEST_SECONDS": "0.8"}
    proc = run_cli(*args, env=env)
    assert proc.returncode == 0, describe(proc)
    (line,) = [ln for ln in proc.stderr.splitlines() if "event loop was blocked" in ln]
    assert "by item 3 (in block_loop at " in line and "hanging.py:" in line, line
    assert "plain def" in line, line
    assert len(json_lines(output)) == 20


@pytest.mark.parametrize("fn", ["block_loop", "hang_def"])
def test_a_second_signal_ends_a_run_at_once_whatever_hangs(fn: str, tmp_path: Path) -> None:
    """A blocked loop (``block_loop``) or a hung call in a worker thread (``hang_def``):
    the first SIGTERM is acknowledged, the second ends the process at once."""
    args, _ = _job(tmp_path, fn, "--grace", "120")
    marker, err_path = tmp_path / "started", tmp_path / "stderr.txt"
    env = {**os.environ, "ASYNCPROC_TEST_STARTED": str(marker)}
    with err_path.open("w", encoding="utf-8") as err:
        proc = subprocess.Popen(
            cli_command(*args), stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
            text=True, env=env,
        )  # fmt: skip
        try:
            wait_until(marker.exists, "the item that hangs", proc)
            proc.send_signal(signal.SIGTERM)
            wait_until(lambda: "again to stop at once" in err_path.read_text(encoding="utf-8"),
                       "the run to acknowledge the first SIGTERM", proc)  # fmt: skip
            proc.send_signal(signal.SIGTERM)
            stdout, _ = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    stderr = err_path.read_text(encoding="utf-8")
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert_no_traceback(done)
    assert proc.returncode == 128 + signal.SIGTERM, describe(done)
    (line,) = error_lines(stderr)
    assert "run the same command again" in line, describe(done)
    if fn == "block_loop":
        assert "item 3 (in block_loop" in stderr and "item 3" in line, describe(done)


def test_a_thread_left_running_does_not_hold_the_process(tmp_path: Path) -> None:
    args, output = _job(tmp_path, "leave_thread")
    proc = run_cli(*args)
    assert proc.returncode == 0, describe(proc, "the summary came, but the process hung")
    assert summary_of(proc)["processed"] == 20
    assert "not waiting for thread(s) left-behind" in proc.stderr, describe(proc)
    assert len(json_lines(output)) == 20
