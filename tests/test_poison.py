"""Poison items: an item whose processing kills its worker process is dead-lettered after
two deaths (three when others were in the processor with it at the second), with the
reason, and the run goes on (before: every rerun died the same way
while saying "run the same command again").

Real worker processes throughout: the processor ends its own process with ``os._exit``
or a signal on one chosen item, as a crash in a C extension would.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import describe, numbered_lines, run_cli, summary_of, write_lines
from faultkit import assert_no_traceback, json_lines, write_module

ITEMS = 3000
POISON = 1234

KILLER = """
import os, pathlib, signal

DEATHS = pathlib.Path({deaths!r})


def work(item):
    if item.startswith("line {poison:06d} "):
        with DEATHS.open("a") as fh:  # each death, seen from outside
            fh.write(f"{{os.getpid()}}\\n")
        {kill}
    return {{"item": item}}
"""

KILLS = {
    "exit 3": "os._exit(3)",
    "signal 11": "os.kill(os.getpid(), signal.SIGSEGV)",
}


def _expected(lines: list[str]) -> bytes:
    rows = (orjson.dumps({"index": i, "item": s}) for i, s in enumerate(lines) if i != POISON)
    return b"".join(row + b"\n" for row in rows)


def _killer(tmp_path: Path, how: str) -> tuple[list[str], Path, Path, Path]:
    """The input, the file each death is noted in, and a processor that kills its worker
    process ``how`` on item ``POISON``."""
    lines = numbered_lines(ITEMS)
    source = write_lines(tmp_path / "in.txt", lines)
    deaths = tmp_path / "deaths"
    processor = write_module(
        tmp_path / "killer.py", KILLER.format(deaths=str(deaths), poison=POISON, kill=KILLS[how])
    )
    return lines, source, deaths, processor


@pytest.mark.parametrize("how", sorted(KILLS))
def test_an_item_that_kills_its_worker_is_dead_lettered_after_two_deaths(
    tmp_path: Path, how: str
) -> None:
    lines, source, deaths, processor = _killer(tmp_path, how)
    out = tmp_path / "out.jsonl"
    proc = run_cli("run", "--input", source, "--output", out, "--checkpoint", tmp_path / "ck",
                   "--processor", f"{processor}:work", "--processes", "2", "--workers", "4",
                   "--batch-size", "50")  # fmt: skip
    _dead_lettered(proc, deaths, out, lines, how)


def _dead_lettered(
    proc: subprocess.CompletedProcess[str], deaths: Path, out: Path, lines: list[str], how: str
) -> None:
    """The run went on: every other item in the output, the poison one dead-lettered."""
    assert_no_traceback(proc)
    assert proc.returncode == 4, describe(proc, "one item failed: exit 4")
    summary: dict[str, Any] = summary_of(proc)
    assert (summary["processed"], summary["failed"]) == (ITEMS - 1, 1), describe(proc)
    # Two deaths when it is alone in the processor at the second, else one more with
    # the suspects called one at a time (processes/poison.py).
    assert len(deaths.read_text().split()) in (2, 3), "the item killed two or three processes"
    assert out.read_bytes() == _expected(lines)
    (dead,) = json_lines(Path(summary["failed_items_file"]))
    assert dead["index"] == POISON, dead
    assert f"killed its worker ({how})" in dead["error"], dead


@pytest.mark.parametrize("how", sorted(KILLS))
def test_in_one_process_the_rerun_dead_letters_it(tmp_path: Path, how: str) -> None:
    """One process: the death ends the invocation. The rerun first goes over what was
    in flight one item at a time in a careful worker process; the item kills that one
    too (its second death), is dead-lettered, and the rerun finishes the run."""
    lines, source, deaths, processor = _killer(tmp_path, how)
    out = tmp_path / "out.jsonl"
    args: list[str | os.PathLike[str]] = [
        "run", "--input", source, "--output", out, "--checkpoint", tmp_path / "ck",
        "--processor", f"{processor}:work", "--workers", "3", "--batch-size", "50",
    ]  # fmt: skip
    proc = run_cli(*args)
    assert proc.returncode != 0 and not out.exists(), describe(proc, "the first death")
    assert len(deaths.read_text().split()) == 1, describe(proc)
    proc = run_cli(*args)
    _dead_lettered(proc, deaths, out, lines, how)


HIDDEN = """
import os, pathlib

MARK = pathlib.Path({mark!r})


def work(item):
    if item.startswith("line 000500 ") and not MARK.exists():
        MARK.touch()
        os._exit(9)  # once: a death that is no item's doing the second time
    return {{"item": item}}
"""


def test_a_processor_worker_processes_cannot_load_still_resumes(tmp_path: Path) -> None:
    """A processor found only through PYTHONPATH (which isolated worker processes do not
    read): after a death the careful pass cannot run, so the rerun goes on without it
    instead of failing every time."""
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    write_module(hidden / "hiddenmod.py", HIDDEN.format(mark=str(tmp_path / "mark")))
    lines = numbered_lines(ITEMS)
    source = write_lines(tmp_path / "in.txt", lines)
    out = tmp_path / "out.jsonl"
    args: list[str | os.PathLike[str]] = [
        "run", "--input", source, "--output", out, "--checkpoint", tmp_path / "ck",
        "--processor", "hiddenmod:work", "--batch-size", "50",
    ]  # fmt: skip
    env = {"PYTHONPATH": str(hidden)}
    assert run_cli(*args, env=env, cwd=tmp_path).returncode == 9
    proc = run_cli(*args, env=env, cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    expected = b"".join(orjson.dumps({"index": i, "item": s}) + b"\n" for i, s in enumerate(lines))
    assert out.read_bytes() == expected
