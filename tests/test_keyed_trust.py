"""Keyed runs stand on the same untrusted ground as file runs.

A keyed run's checkpoint directory may have been made by another user, be writable by
others, or hold records and symlinks planted there: the native ``CheckpointManager``
and the sync ``asyncproc.compat`` one must refuse it with one line saying what to do,
never follow a run id or a symlink out of the directory, and write run data owner-only
whatever the umask. Each test first proves that the hostile state is really there.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import CLI_TIMEOUT, describe, give_to_another_user, take_back

import asyncproc
from asyncproc.compat import CheckpointManager as CompatManager
from asyncproc.compat import LoaderCheckpoint as CompatLoader
from asyncproc.keyed.records import KEYED_MANIFEST, KeyedRunRecord

BAD_IDS = ("../../x", "/etc", "..", "run_20260101_000000/../..")


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _one_line(exc: BaseException, *words: str) -> str:
    text = str(exc)
    assert "\n" not in text, text
    for word in words:
        assert word in text, f"{word!r} missing from: {text}"
    return text


def _names_python_arguments(text: str) -> None:
    assert "checkpoint_dir" in text and "--checkpoint" not in text, text


async def _interrupted_run(ck: Path, keys: int = 30) -> str:
    """A keyed run left resumable, with acknowledged keys in loader ``load``."""
    run = await asyncproc.CheckpointManager(ck, shards=2).start_run({"db": "prod"})
    loader = await run.loader("load", interval=5)
    for i in range(keys):
        await loader.mark_processed(f"k{i}")
    await run.close()
    return run.run_id


def _snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry below ``root``: file bytes, symlink targets, folders by name."""
    found: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = f"-> {os.readlink(path)}"
        elif path.is_file():
            found[key] = path.read_bytes()
        else:
            found[key] = "dir"
    return found


# -- directories that others can write ---------------------------------------------------


async def test_native_manager_refuses_a_checkpoint_dir_others_can_write(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    ck.chmod(0o770)
    assert _mode(ck) & stat.S_IWGRP, "the checkpoint directory is group-writable"
    with pytest.raises(asyncproc.UntrustedDirectoryError) as refused:
        await asyncproc.CheckpointManager(ck).start_run()
    text = _one_line(refused.value, str(ck), "writable by others", f"chmod go-w {ck}")
    _names_python_arguments(text)
    calls: list[int] = []

    @asyncproc.checkpointed(name="load", checkpoint_dir=ck)
    async def load(ctx: asyncproc.LoaderContext[int]) -> None:
        calls.append(1)

    with pytest.raises(asyncproc.UntrustedDirectoryError, match="writable by others"):
        await load()
    assert calls == [], "the decorated loader never ran"


async def test_native_manager_refuses_a_checkpoint_dir_of_another_user(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir(mode=0o700)
    other = give_to_another_user(ck)
    assert ck.stat().st_uid == other
    with pytest.raises(asyncproc.UntrustedDirectoryError) as refused:
        await asyncproc.CheckpointManager(ck).start_run()
    _names_python_arguments(_one_line(refused.value, f"belongs to uid {other}"))
    assert list(ck.iterdir()) == [], "nothing was created in the refused directory"


async def test_native_manager_refuses_to_resume_a_run_dir_others_can_write(
    tmp_path: Path,
) -> None:
    ck = tmp_path / "ck"
    run_id = await _interrupted_run(ck)
    run_dir = ck / run_id
    segments = run_dir / "loaders" / "load" / "segments"
    before = _snapshot(run_dir)
    manager = asyncproc.CheckpointManager(ck, shards=2)
    for folder, mode, words in (
        (run_dir, 0o777, ("run directory", "writable by others")),
        (segments, 0o757, ("segments", "writable by others")),
    ):
        folder.chmod(mode)
        assert _mode(folder) & stat.S_IWOTH, f"{folder} is world-writable"
        with pytest.raises(asyncproc.UntrustedDirectoryError) as refused:
            await manager.start_run({"db": "prod"}, run_id=run_id)
        _one_line(refused.value, *words, f"chmod go-w {folder}")
        folder.chmod(0o700)
    assert _snapshot(run_dir) == before, "a refused run was not touched"
    run = await manager.start_run({"db": "prod"})
    assert run.resumed and run.run_id == run_id
    assert (await run.loader("load")).is_processed("k29")
    await run.complete()


async def test_native_manager_refuses_to_resume_a_run_dir_of_another_user(
    tmp_path: Path,
) -> None:
    ck = tmp_path / "ck"
    run_id = await _interrupted_run(ck)
    run_dir = ck / run_id
    before = _snapshot(run_dir)
    manager = asyncproc.CheckpointManager(ck, shards=2)
    other = give_to_another_user(run_dir)
    with pytest.raises(asyncproc.UntrustedDirectoryError, match=f"belongs to uid {other}"):
        await manager.start_run({"db": "prod"})  # the newest incomplete run is chosen
    take_back(run_dir)
    assert _snapshot(run_dir) == before, "a refused run was not touched"
    run = await manager.start_run({"db": "prod"})
    assert run.resumed and run.run_id == run_id
    await run.complete()


def test_compat_manager_refuses_a_checkpoint_dir_others_can_write(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    ck.chmod(0o777)
    assert _mode(ck) & stat.S_IWOTH, "the checkpoint directory is world-writable"
    with pytest.raises(asyncproc.UntrustedDirectoryError) as refused:
        CompatManager(ck)
    text = _one_line(refused.value, str(ck), "writable by others", f"chmod go-w {ck}")
    _names_python_arguments(text)
    assert list(ck.iterdir()) == []


def test_compat_manager_refuses_a_run_dir_of_another_user(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    manager = CompatManager(ck)
    run_id = manager.start_new_run("first")
    CompatLoader(manager, "load").mark_processed("k0")
    manager.close()
    other = give_to_another_user(ck / run_id)
    assert (ck / run_id).stat().st_uid == other
    again = CompatManager(ck)
    try:
        with pytest.raises(asyncproc.UntrustedDirectoryError) as refused:
            again.resume_run()
        _one_line(refused.value, "run directory", f"belongs to uid {other}")
        assert again.current_run_id is None
    finally:
        again.close()


# -- symlinks and run ids that lead out of the directory ---------------------------------


async def test_a_run_directory_that_is_a_symlink_is_never_followed(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    run_id = await _interrupted_run(ck)
    moved = tmp_path / "elsewhere" / run_id
    moved.parent.mkdir()
    (ck / run_id).rename(moved)
    (ck / run_id).symlink_to(moved)
    assert (ck / run_id).is_symlink() and (ck / run_id / KEYED_MANIFEST).is_file()
    before = _snapshot(moved)
    manager = asyncproc.CheckpointManager(ck, shards=2)
    assert manager.list_runs() == [], "a symlinked run is not listed"
    with pytest.raises(asyncproc.CheckpointError) as refused:
        await manager.start_run({"db": "prod"}, run_id=run_id)
    _one_line(refused.value, str(ck / run_id), "symbolic link")
    compat = CompatManager(ck)
    try:
        with pytest.raises(asyncproc.CheckpointError, match="symbolic link"):
            compat.resume_run(run_id)
        assert compat.resume_run() is None, "nothing else to resume"
    finally:
        compat.close()
    fresh = await manager.start_run({"db": "prod"})
    assert not fresh.resumed and fresh.run_id != run_id
    await fresh.complete()
    assert _snapshot(moved) == before, "the run the link led to was not touched"


async def test_a_loader_folder_that_is_a_symlink_is_never_written_through(
    tmp_path: Path,
) -> None:
    ck = tmp_path / "ck"
    run_id = await _interrupted_run(ck)
    outside = tmp_path / "outside"
    outside.mkdir()
    (ck / run_id / "loaders" / "other").symlink_to(outside)
    run = await asyncproc.CheckpointManager(ck, shards=2).start_run({"db": "prod"})
    assert run.resumed and run.run_id == run_id
    with pytest.raises(asyncproc.CheckpointError) as refused:
        await run.loader("other")
    _one_line(refused.value, "loaders/other", "symbolic link", "remove it")
    loader = await run.loader("load")
    await loader.mark_processed("k99")
    await run.complete()
    assert list(outside.iterdir()) == [], "nothing was written through the link"


async def test_run_ids_given_by_the_caller_are_confined(tmp_path: Path) -> None:
    # A real unfinished run, with a checkpoint directory inside it: "..", from there,
    # names that run, outside the checkpoint directory.
    outer = tmp_path / "outer"
    outer_id = await _interrupted_run(outer)
    ck = outer / outer_id / "nested"
    ck.mkdir(mode=0o700)
    assert (ck / ".." / KEYED_MANIFEST).is_file(), "'..' names a real run"
    before = _snapshot(outer)
    manager = asyncproc.CheckpointManager(ck, shards=2)
    for bad in BAD_IDS:
        with pytest.raises(asyncproc.ConfigError) as refused:
            await manager.start_run({"db": "prod"}, run_id=bad)
        _one_line(refused.value, repr(bad), "not a run id", "asyncproc.list_runs(")
    compat = CompatManager(ck)
    try:
        for bad in BAD_IDS:
            with pytest.raises(asyncproc.ConfigError, match="not a run id"):
                compat.resume_run(bad)
        assert compat.current_run_id is None
    finally:
        compat.close()
    inside = f"{outer_id}/nested/"
    after = {k: v for k, v in _snapshot(outer).items() if not k.startswith(inside)}
    assert after == before, "the run outside the checkpoint directory was not touched"


async def test_a_forged_run_id_in_a_record_is_refused(tmp_path: Path) -> None:
    victim_ck = tmp_path / "victim"
    victim_id = await _interrupted_run(victim_ck)
    victim_before = _snapshot(victim_ck)
    ck = tmp_path / "ck"
    run_id = await _interrupted_run(ck)
    manifest = ck / run_id / KEYED_MANIFEST
    record = KeyedRunRecord.from_bytes(manifest.read_bytes(), "keyed run")
    escape = f"../victim/{victim_id}"
    manifest.write_bytes(dataclasses.replace(record, run_id=escape).to_bytes())  # sealed
    assert (ck / escape / KEYED_MANIFEST).is_file(), "the forged id names a real run"
    with pytest.raises(asyncproc.CorruptCheckpointError) as refused:
        await asyncproc.CheckpointManager(ck, shards=2).start_run({"db": "prod"})
    _one_line(refused.value, repr(escape), "forged", "delete the run directory")
    views = {v.run_id: v for v in asyncproc.list_runs(ck)}
    assert escape not in views, "the management views do not take the forged id either"
    assert _snapshot(victim_ck) == victim_before, "the run the id led to was not touched"


# -- owner-only whatever the umask -------------------------------------------------------

JOB = """
import anyio, os, sys
import asyncproc
from asyncproc.compat import CheckpointManager, LoaderCheckpoint

print(oct(os.umask(0)))


async def native(ck):
    run = await asyncproc.CheckpointManager(ck, shards=2).start_run({"n": 1})
    loader = await run.loader("native", interval=5)
    loader.set_total_items(20)
    for i in range(20):
        await loader.mark_processed(i)
    await loader.mark_failed("bad", ValueError("down"))
    await run.close()


anyio.run(native, sys.argv[1])
manager = CheckpointManager(sys.argv[2])
manager.start_new_run("sync", {"n": 2})
checkpoint = LoaderCheckpoint(manager, "sync", checkpoint_interval=5)
for i in range(20):
    checkpoint.mark_processed(i)
checkpoint.mark_failed("bad", "down")
checkpoint.save_progress()
manager.mark_loader_complete("sync")
manager.complete_run()
manager.close()
"""


def _umask_zero() -> None:
    os.umask(0)


def test_keyed_run_data_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    native, compat = tmp_path / "native" / "ck", tmp_path / "compat" / "ck"
    native.parent.mkdir()
    compat.parent.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(JOB), native, compat], capture_output=True,
        text=True, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL, preexec_fn=_umask_zero,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.split()[0] == "0o0", describe(proc, "the job ran under umask 0")
    for ck in (native, compat):
        private = [ck, *ck.rglob("*")]
        names = {p.name for p in private} | {p.suffix for p in private}
        assert {KEYED_MANIFEST, "loader.json", ".ckpt", ".keys", ".fail", "lock"} <= names
        for path in private:
            assert not path.is_symlink(), path
            mode = _mode(path)
            assert mode == (0o700 if path.is_dir() else 0o600), f"{path}: {mode:04o}"
