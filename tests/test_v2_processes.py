"""``--processes 2``: a unit running in one child is split to feed the other, idle one.

Each child runs one unit slot. The first half of the input is slow and its second
quarter waits behind a gate (a file); the second half is instant. The child with the
second half finishes early and asks the parent for work; the parent can only give it
the tail of the unit running in the other child, so a split across processes must
happen. Then one child is SIGKILLed while both hold gated items, after the split was
recorded; the run fails cleanly and the same command resumes it to the clean bytes.
Which child runs which unit is read from the segment files it holds open.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import pytest
from conftest import (
    CLI_TIMEOUT,
    expected_array,
    numbered_lines,
    run_ok,
    text_items,
    wait_until,
    write_lines,
)
from v2kit import (
    Arg,
    call_env,
    calls,
    children,
    committed_now,
    start,
    units_now,
    write_processor,
)

ITEMS = 3000
HALF = ITEMS // 2


def _args(source: Path, processor: Path, out_dir: Path) -> list[Arg]:
    return [
        "run", "--input", source, "--output", out_dir / "result.json",
        "--checkpoint", out_dir / "ck", "--processor", f"{processor}:work",
        "--workers", "2", "--processes", "2", "--concurrency", "16", "--batch-size", "50",
        "--retries", "0",
    ]  # fmt: skip


def _env(log: Path, gate: Path, *, opened_by_last_item: bool) -> dict[str, str]:
    env = {
        "ASYNCPROC_TEST_SLOW_BELOW": str(HALF),
        "ASYNCPROC_TEST_GATED": f"{HALF // 2}:{HALF}",
        "ASYNCPROC_TEST_GATE": str(gate),
    }
    if opened_by_last_item:
        env["ASYNCPROC_TEST_OPENS"] = f"{ITEMS - 1}:{gate}"
    return call_env(log, env)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "input.txt", numbered_lines(ITEMS))


@pytest.fixture
def expected(source: Path) -> bytes:
    return expected_array((i, {"item": s}) for i, s in enumerate(text_items(source.read_bytes())))


def test_an_idle_child_gets_the_tail_of_the_other_childs_unit(
    tmp_path: Path, source: Path, expected: bytes
) -> None:
    processor = write_processor(tmp_path / "skewed.py")
    out_dir, log = tmp_path / "run", tmp_path / "calls.log"
    out_dir.mkdir()
    # The gated quarter waits until the last item of the second half has been called.
    env = _env(log, tmp_path / "gate", opened_by_last_item=True)
    summary = run_ok(*_args(source, processor, out_dir), env=env)
    assert summary["processes"] == 2 and summary["workers"] == 2, summary
    assert summary["units"] > 2, f"no unit was split for the idle child: {summary}"
    assert (out_dir / "result.json").read_bytes() == expected
    assert max(Counter(calls(log)).values()) == 1 and len(calls(log)) == ITEMS


def _unit_of(pid: int) -> set[int]:
    """The units whose segments process ``pid`` holds open."""
    units = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = Path(os.readlink(fd))
        except OSError:
            continue
        if target.parent.name == "segments" and target.suffix == ".out":
            units.add(int(target.name.split(".")[0]))
    return units


def _gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            return False
    return True


@pytest.mark.parametrize("victim", ["cut", "tail"])
def test_sigkill_of_a_child_after_a_split_the_run_goes_on(
    victim: str, tmp_path: Path, source: Path, expected: bytes
) -> None:
    """The killed child's units are rerun from their checkpoints in the same invocation
    (carefully at first, see processes/poison.py): exact bytes, nothing committed before
    the kill processed again."""
    processor = write_processor(tmp_path / "skewed.py")
    out_dir, log, gate = tmp_path / "run", tmp_path / "calls.log", tmp_path / "gate"
    out_dir.mkdir()
    args, ck = _args(source, processor, out_dir), out_dir / "ck"
    proc = start(args, _env(log, gate, opened_by_last_item=False), tmp_path)
    try:
        # Both children hold gated items once the tail of unit 0 is handed out.
        assert wait_until(lambda: units_now(ck) == 3, "the split", proc), "the run ended"
        kids = children(proc.pid)
        assert len(kids) == 2, kids
        assert wait_until(lambda: sorted(u for k in kids for u in _unit_of(k)) == [0, 2],
                          "units 0 and 2 running in the children", proc)  # fmt: skip
        holder = {unit: pid for pid in kids for unit in _unit_of(pid)}
        done, before = committed_now(ck), len(calls(log))
        victim_pid = holder[0 if victim == "cut" else 2]
        os.kill(victim_pid, signal.SIGKILL)
        assert wait_until(lambda: _gone([victim_pid]), "the child to die"), victim_pid
        gate.touch()
        code = proc.wait(timeout=CLI_TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=CLI_TIMEOUT)
    stderr = (tmp_path / "stderr").read_text(errors="replace")
    assert code == 0, f"the run should go on when a child dies: exit {code}\n{stderr}"
    assert "ended (signal 9); rerunning" in stderr, stderr
    assert HALF <= len(done) < ITEMS, f"the kill should land after progress: {len(done)}"
    assert (out_dir / "result.json").read_bytes() == expected
    index = {item: k for k, item in enumerate(text_items(source.read_bytes()))}
    again = {index[c] for c in calls(log)[before:]}
    assert not again & done, "items committed before the kill were processed again"
    assert {index[c] for c in calls(log)} == set(range(ITEMS))
