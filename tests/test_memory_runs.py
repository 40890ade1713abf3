"""Whole runs on :class:`MemoryStorage`, handed in as the checkpoint directory: power cuts
(``crashed()``, torn tails included), a full disk (``fail_next``) and the journal's order,
each checked against a run on disk byte for byte. No process is killed: the storage is."""

from __future__ import annotations

import errno
import logging
import random
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import numbered_lines, write_lines

import asyncproc
from asyncproc._errors import ConfigError, SimulatedCrash
from asyncproc.storage.memory import Event, MemoryStorage, Op

WORKERS = 3
OPTIONS: dict[str, Any] = {
    "quiet": True,
    "batch_size": 7,
    "workers": WORKERS,
    "commit_interval": 0.001,
}
REDONE = "redoing it from its start"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "in.txt", numbered_lines(600))


@pytest.fixture
def clean(tmp_path: Path, source: Path) -> bytes:
    """The output of a run with its checkpoints on disk."""
    out = tmp_path / "clean.jsonl"
    asyncproc.run_file(source, out, checkpoint_dir=tmp_path / "ck", **OPTIONS)
    return out.read_bytes()


async def test_a_run_on_memory_writes_what_a_run_on_disk_writes(
    tmp_path: Path, source: Path, clean: bytes
) -> None:
    storage = MemoryStorage()
    out = tmp_path / "out.jsonl"
    summary = await asyncproc.process_file(source, out, checkpoint_dir=storage, **OPTIONS)
    assert (summary.status, summary.processed) == ("completed", 600)
    assert out.read_bytes() == clean
    assert not (tmp_path / ".asyncproc").exists(), "the run kept state on disk"
    left = {name.partition("/")[2] for name in storage.list("")}
    assert left == {"claim", "manifest.json"}, f"state not cleared: {left}"
    checked = synced_before_checkpoints(storage.journal())
    assert checked >= WORKERS, f"only {checked} checkpoints put"


def synced_before_checkpoints(journal: tuple[Event, ...]) -> int:
    """Every checkpoint put finds its unit's appended bytes synced; how many were put."""
    appended: dict[str, int] = {}
    synced: dict[str, int] = {}
    puts = 0
    for event in journal:
        folder, _, base = event.name.rpartition("/")
        if event.op is Op.APPEND:
            appended[event.name] = appended.get(event.name, 0) + event.size
        elif event.op is Op.SYNC:
            synced[event.name] = event.size
        elif event.op is Op.PUT and folder.endswith("/units"):
            unit = base.partition(".")[0]
            mine = [n for n in appended if n.rpartition("/")[2].startswith(unit + ".")]
            unsynced = [n for n in mine if synced.get(n, 0) != appended[n]]
            assert not unsynced, f"checkpoint {event.name} put before {unsynced} were synced"
            puts += 1
    return puts


@pytest.mark.parametrize("seed", range(4))
async def test_a_power_cut_anywhere_resumes_to_the_same_bytes(
    tmp_path: Path, source: Path, clean: bytes, seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Cut the power after a random number of commits, keep random unsynced tails, resume:
    the output is the clean run's, and no unit starts over (an empty segment a checkpoint
    names but nothing synced may vanish in a power cut, and that costs nothing)."""
    rng = random.Random(seed)
    storage, out = MemoryStorage(), tmp_path / "out.jsonl"
    with pytest.raises(SimulatedCrash):
        await asyncproc.process_file(
            source, out, checkpoint_dir=storage, simulate_crash=rng.randint(1, 500), **OPTIONS
        )
    survivor = storage.crashed(torn=rng)
    with caplog.at_level(logging.INFO, logger="asyncproc"):
        summary = await asyncproc.process_file(source, out, checkpoint_dir=survivor, **OPTIONS)
    assert summary.resumed and summary.processed == 600
    assert out.read_bytes() == clean
    assert REDONE not in caplog.text, caplog.text


async def test_a_power_cut_between_the_data_sync_and_its_checkpoint(
    tmp_path: Path, source: Path, clean: bytes
) -> None:
    """Hold the first segment sync just after it made the bytes durable, take the power
    cut there (the checkpoint naming them is not put yet), then let the run go on."""
    storage, out = MemoryStorage(), tmp_path / "out.jsonl"
    options = {**OPTIONS, "workers": 1}  # one unit: nothing else commits meanwhile
    gate = storage.hold(Op.SYNC, after=True)
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(asyncproc.process_file, source, out, checkpoint_dir=storage,
                              **options))  # fmt: skip
        await anyio.to_thread.run_sync(gate.wait)
        survivor = storage.crashed()
        gate.release()
    synced = [n for n in survivor.list("run_") if "/segments/" in n]
    assert synced, "the cut came before any segment was durable"
    assert not [n for n in survivor.list("run_") if "/units/" in n], "a checkpoint was put"
    for lease in [n for n in survivor.list("") if "lease/" in n]:
        survivor.delete(lease)  # held by this process, which a real power cut ends
    summary = await asyncproc.process_file(source, out, checkpoint_dir=survivor, **options)
    assert summary.resumed and summary.processed == 600
    assert out.read_bytes() == clean


async def test_a_full_disk_fails_the_run_and_a_resume_finishes_it(
    tmp_path: Path, source: Path, clean: bytes
) -> None:
    storage, out = MemoryStorage(), tmp_path / "out.jsonl"
    storage.fail_next(Op.SYNC, errno.ENOSPC, prefix="run_")
    with pytest.raises(OSError, match="No space left"):
        await asyncproc.process_file(source, out, checkpoint_dir=storage, **OPTIONS)
    (run_id,) = {name.partition("/")[0] for name in storage.list("run_")}
    summary = await asyncproc.process_file(source, out, checkpoint_dir=storage, **OPTIONS)
    assert (summary.run_id, summary.resumed, summary.processed) == (run_id, True, 600)
    assert out.read_bytes() == clean


async def test_other_processes_cannot_reach_a_storage_of_this_one(
    tmp_path: Path, source: Path
) -> None:
    with pytest.raises(ConfigError, match="only this process can reach"):
        await asyncproc.process_file(
            source, tmp_path / "out.jsonl", checkpoint_dir=MemoryStorage(), quiet=True,
            processes=2,
        )  # fmt: skip
