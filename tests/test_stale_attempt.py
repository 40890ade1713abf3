"""A stale attempt: two attempts at one unit writing at the same time.

A process thought dead may still be writing while a new attempt works on the same unit.
Here two attempts (each its own in-process executor, lanes and committer) start from the
same durable checkpoint of a half-done run and run concurrently in one event loop; each
must write its own segment, and whatever they leave behind, running the command again
must finish with the clean run's bytes.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import anyio
from conftest import describe, expected_array, numbered_lines, run_cli, text_items, write_lines
from faultkit import only_run_dir, read_manifest, write_module
from unitkit import OneUnit, run_unit, spec_from_manifest

from asyncproc._errors import AsyncprocError
from asyncproc.engine.unit import Commit
from asyncproc.runs.rundir import local_run
from asyncproc.storage.records import Manifest, UnitCheckpoint

ITEMS = 1200
LANES = {"first": 8, "second": 4}  # different speeds: the attempts drift apart

PROCESSOR = """
import anyio


async def work(item):
    await anyio.sleep(0.001)
    return {"item": item, "words": len(item.split())}
"""


def _args(source: Path, out_dir: Path, processor: Path) -> list[Any]:
    out_dir.mkdir()
    return ["run", "--input", source, "--output", out_dir / "result.json",
            "--checkpoint", out_dir / "ck", "--processor", f"{processor}:work",
            "--workers", "1", "--batch-size", "50", "--concurrency", "16"]  # fmt: skip


def _cli(*args: Any, code: int) -> subprocess.CompletedProcess[str]:
    proc = run_cli(*args)
    assert proc.returncode == code, describe(proc, f"expected exit code {code}")
    assert "Traceback" not in proc.stderr, describe(proc)
    return proc


def _half_done(tmp_path: Path) -> tuple[list[Any], Path, Manifest, UnitCheckpoint, set[str]]:
    source = write_lines(tmp_path / "input.txt", numbered_lines(ITEMS))
    processor = write_module(tmp_path / "slowish.py", PROCESSOR)
    args = _args(source, tmp_path / "stale", processor)
    _cli(*args, "--simulate-crash", "300", code=3)
    run_dir = only_run_dir(tmp_path / "stale" / "ck")
    manifest = read_manifest(run_dir)
    assert len(manifest.units) == 1, manifest.units
    start = local_run(run_dir).unit_store(0).load().checkpoint
    assert start is not None and start.next_index >= 300, start
    assert start.offset < manifest.input.size, start
    segments = set(os.listdir(run_dir / "segments"))
    return args, run_dir, manifest, start, segments


def _clean_bytes(tmp_path: Path) -> bytes:
    source = tmp_path / "input.txt"
    processor = tmp_path / "slowish.py"
    _cli(*_args(source, tmp_path / "clean", processor), code=0)
    clean = (tmp_path / "clean" / "result.json").read_bytes()
    items = text_items(source.read_bytes())
    expected = expected_array((i, {"item": s, "words": len(s.split())}) for i, s in
                              enumerate(items))  # fmt: skip
    assert clean == expected
    return clean


async def test_two_attempts_at_one_unit_cannot_corrupt_output(tmp_path: Path) -> None:
    args, run_dir, manifest, start, before = await anyio.to_thread.run_sync(_half_done, tmp_path)
    processor = str(manifest.options["processor"])

    order: list[str] = []
    segment: dict[str, set[str]] = {"first": set(), "second": set()}
    outcome: dict[str, UnitCheckpoint | BaseException] = {}

    def on_commit(name: str) -> Any:
        def record(commit: Commit) -> None:
            assert commit.unit_id == 0
            order.append(name)
            segment[name].add(commit.checkpoint.segments[-1].name)

        return record

    async def attempt(name: str) -> None:
        work = OneUnit(spec_from_manifest(run_dir, manifest), start, on_commit=on_commit(name))
        try:
            outcome[name] = await run_unit(work, processor, LANES[name])
        except* (OSError, AsyncprocError) as group:  # a stale attempt may be refused
            outcome[name] = group

    async with anyio.create_task_group() as tg:
        tg.start_soon(attempt, "first")
        tg.start_soon(attempt, "second")

    # A stale attempt may fail (and only with an OSError or an asyncproc error): what
    # matters is what it leaves on disk. Print what happened, for the record.
    print("outcomes:", {k: repr(v)[:300] for k, v in outcome.items()}, "commits:", order)
    assert order, "no attempt committed anything"
    assert set(outcome) == {"first", "second"}, outcome
    for name, result in outcome.items():
        if isinstance(result, UnitCheckpoint):  # an attempt that returned finished the unit
            assert result.offset == manifest.input.size, (name, result)
            assert result.next_index == ITEMS, (name, result)

    # Each attempt wrote (segment bytes are written before its checkpoint) its own file.
    new = sorted(set(os.listdir(run_dir / "segments")) - before)
    outs = [name for name in new if name.endswith(".out")]
    assert len(outs) == 2, f"the two attempts should write two different segments: {new}"
    for name in outs:
        assert (run_dir / "segments" / name).stat().st_size > 0, f"{name} is empty"
    assert not segment["first"] & segment["second"], segment

    resumed = await anyio.to_thread.run_sync(lambda: _cli(*args, code=0))
    clean = await anyio.to_thread.run_sync(_clean_bytes, tmp_path)
    output = tmp_path / "stale" / "result.json"
    assert await anyio.Path(output).read_bytes() == clean, describe(
        resumed, "after two concurrent attempts the output differs from a clean run"
    )
