"""A run's files belong to it: a line index copied in from another input is not used,
planning cut short leaves nothing behind, and folders made again stay owner-only."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from conftest import describe, numbered_lines, run_cli, summary_of, write_lines
from faultkit import only_run_dir

from asyncproc.storage.localfs import LocalStorage
from asyncproc.storage.records import LineIndex


def test_a_line_index_from_another_input_is_rebuilt(tmp_path: Path) -> None:
    """Resuming with more workers cuts the rest at indexed points: a foreign index would
    cut items in the middle (more lines than items). It is made again from the input."""
    mine = write_lines(tmp_path / "mine.txt", numbered_lines(3000))
    other = write_lines(tmp_path / "other.txt", [f"{i}" * (i % 9 + 1) for i in range(9000)])
    clean = tmp_path / "clean.jsonl"
    assert run_cli("run", "--input", mine, "--output", clean, "--checkpoint",
                   tmp_path / "ck-clean", "--quiet").returncode == 0  # fmt: skip

    def args(source: Path, name: str) -> list[str | Path]:
        return ["run", "--input", source, "--output", tmp_path / f"{name}.jsonl",
                "--checkpoint", tmp_path / f"ck-{name}", "--workers", "1", "--batch-size", "50",
                "--quiet"]  # fmt: skip

    for source, name in ((mine, "mine"), (other, "other")):
        crashed = run_cli(*args(source, name), "--simulate-crash", "200")
        assert crashed.returncode == 3, describe(crashed)
    mine_run, other_run = only_run_dir(tmp_path / "ck-mine"), only_run_dir(tmp_path / "ck-other")
    foreign = (other_run / "index.json").read_bytes()
    assert foreign != (mine_run / "index.json").read_bytes()
    (mine_run / "index.json").write_bytes(foreign)

    resumed = run_cli(*args(mine, "mine"), "--workers", "4")
    assert resumed.returncode == 0, describe(resumed)
    assert summary_of(resumed)["resumed"] is True
    assert (tmp_path / "mine.jsonl").read_bytes() == clean.read_bytes()
    assert "another input" in resumed.stderr, describe(resumed, "the warning should say why")


def plain_run(source: Path, tmp_path: Path) -> list[str | Path]:
    return ["run", "--input", source, "--output", tmp_path / "out.jsonl", "--checkpoint",
            tmp_path / "ck", "--quiet"]  # fmt: skip


def test_the_planned_index_is_bound_to_the_input(tmp_path: Path) -> None:
    """The index written at planning names the input's fingerprint (read back from disk)."""
    source = write_lines(tmp_path / "in.txt", numbered_lines(500))
    args = plain_run(source, tmp_path)
    crashed = run_cli(*args, "--simulate-crash", "100")
    assert crashed.returncode == 3, describe(crashed)
    run = only_run_dir(tmp_path / "ck")
    index = LineIndex.from_bytes((run / "index.json").read_bytes(), "index")
    manifest = (run / "manifest.json").read_bytes()
    assert index.fingerprint and index.fingerprint.encode() in manifest


def test_planning_cut_short_leaves_no_temporary_file(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.txt", numbered_lines(500))
    args = plain_run(source, tmp_path)
    for point in ("before_rename_index", "before_rename_manifest"):
        crashed = run_cli(*args, env={"ASYNCPROC_CRASH_AT": f"{point}:1"})
        assert crashed.returncode == 3, describe(crashed)
    assert list((tmp_path / "ck").glob("run_*/.*.tmp")), "the crashes should leave temporaries"
    done = run_cli(*args)
    assert done.returncode == 0, describe(done)
    left = sorted(str(p.relative_to(tmp_path / "ck")) for p in (tmp_path / "ck").rglob("*"))
    run = only_run_dir(tmp_path / "ck").name
    assert left == [".lock", run, f"{run}/lock", f"{run}/manifest.json"], left


def test_a_checkpoint_directory_removed_mid_run_comes_back_owner_only(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    storage = LocalStorage(ck / "run_20260101_000000")
    storage.put("units/0000.a.ckpt", b"one")
    shutil.rmtree(ck)
    old = os.umask(0o022)
    try:
        storage.put("units/0000.b.ckpt", b"two")
    finally:
        os.umask(old)
    for folder in (ck, storage.root, storage.root / "units"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, (folder, oct(folder.stat().st_mode))
