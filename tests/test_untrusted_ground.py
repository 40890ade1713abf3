"""The checkpoint and output directories are untrusted ground.

Another local user may be able to write there, or the directory was copied from
elsewhere. Records are forged here with valid checksums (a checksum detects damage, not
forgery), symlinks are planted where asyncproc writes, and directories are handed to
another user: a run must refuse, never read, write or delete outside its own run, and
never write through a planted link. Each test runs the real CLI in a subprocess.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from conftest import (
    cli_command,
    describe,
    expected_text_stats_array,
    give_to_another_user,
    numbered_lines,
    run_cli,
    run_ok,
    summary_of,
    take_back,
    write_lines,
)
from faultkit import (
    assert_no_traceback,
    only_run_dir,
    read_checkpoint,
    read_manifest,
    refused,
    slot_files,
    write_module,
)

from asyncproc.storage.records import SegmentRef

SECRET = b'{"index": 0, "secret": "TOP SECRET"}\n'


def _job(tmp_path: Path, items: int = 60) -> tuple[list[Any], Path, bytes]:
    """A small job: its arguments, its output and the bytes a clean run makes."""
    source = write_lines(tmp_path / "input.txt", numbered_lines(items))
    out_dir = tmp_path / "out"
    out_dir.mkdir(exist_ok=True)
    output = out_dir / "result.json"
    args = ["run", "--input", source, "--output", output, "--checkpoint", tmp_path / "ck",
            "--batch-size", "5", "--concurrency", "1", "--quiet"]  # fmt: skip
    return args, output, expected_text_stats_array(source.read_bytes())


def _crashed(args: list[Any], after: int = 20) -> None:
    proc = run_cli(*args, "--simulate-crash", str(after))
    assert proc.returncode == 3, describe(proc, "the simulated crash should exit 3")


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim" / "secret.jsonl"
    victim.parent.mkdir()
    victim.write_bytes(SECRET)
    return victim


# -- records that name paths -------------------------------------------------------------


def test_forged_segment_names_never_reach_outside_the_run(tmp_path: Path) -> None:
    args, output, clean = _job(tmp_path)
    victim = _victim(tmp_path)
    _crashed(args)
    run_dir = only_run_dir(tmp_path / "ck")
    older, newer = slot_files(run_dir, 0)
    # Slot one: a path that climbs out of the run. Slot two: a well-formed segment name
    # that is a symlink to the secret. Both sealed with valid checksums.
    escape = os.path.relpath(victim, run_dir / "segments")
    for slot, name in ((newer, escape), (older, "0000.009-abcdef.out")):
        checkpoint = read_checkpoint(slot)
        forged = dataclasses.replace(checkpoint, segments=(SegmentRef(name, len(SECRET)),))
        slot.write_bytes(forged.to_bytes())
    (run_dir / "segments" / "0000.009-abcdef.out").symlink_to(victim)

    proc = run_cli(*args)
    assert_no_traceback(proc)
    assert proc.returncode == 0, describe(proc)
    assert "is not a segment name" in proc.stderr, describe(proc, "the forgery is reported")
    assert "redoing it from its start" in proc.stderr, describe(proc)
    assert output.read_bytes() == clean and b"TOP SECRET" not in output.read_bytes()
    assert victim.read_bytes() == SECRET


def test_run_ids_and_run_directories_are_confined(tmp_path: Path) -> None:
    args, output, clean = _job(tmp_path)
    _crashed(args)
    ck = tmp_path / "ck"
    for bad in ("../../x", "/etc", "run_20260101_000000/../..", ".."):
        refused(run_cli(*args, "--resume", bad), 2, "not a run id")
    # A run directory that is a symlink is never followed: not to resume it, not to find it.
    run_dir = only_run_dir(ck)
    moved = tmp_path / "elsewhere" / run_dir.name
    moved.parent.mkdir()
    run_dir.rename(moved)
    run_dir.symlink_to(moved)
    before = sorted(p.name for p in (moved / "segments").iterdir())
    refused(run_cli(*args, "--resume", run_dir.name), 1, "symbolic link")
    summary = run_ok(*args)
    assert summary["resumed"] is False and summary["run_id"] != run_dir.name, summary
    assert output.read_bytes() == clean
    assert sorted(p.name for p in (moved / "segments").iterdir()) == before


FAILING = """
import os


async def work(item):
    if os.environ.get("FAIL") == "1" and item.endswith("end3"):
        raise ValueError("down")
    return {"item": item}
"""


def test_a_forged_summary_or_output_cannot_aim_retry_failed_or_show(tmp_path: Path) -> None:
    module = write_module(tmp_path / "failing.py", FAILING)
    args, _, _ = _job(tmp_path)
    args = [*args, "--processor", f"{module}:work", "--retries", "0"]
    first = summary_of(run_cli(*args, env={"FAIL": "1"}, check=4))
    assert first["failed"] > 0, first
    run_dir = tmp_path / "ck" / first["run_id"]
    victim = _victim(tmp_path)
    decoy = victim.with_name("important.json")
    decoy.write_bytes(b"[]\n")
    decoy_failed = victim.with_name("important.failed.jsonl")
    decoy_failed.write_bytes(SECRET)

    manifest = read_manifest(run_dir)
    summary = {**(manifest.summary or {}), "failed_items_file": str(victim)}
    (run_dir / "manifest.json").write_bytes(
        dataclasses.replace(manifest, summary=summary).to_bytes()
    )
    shown = run_cli("show", first["run_id"], "--checkpoint", tmp_path / "ck", "--json", check=0)
    assert "TOP SECRET" not in shown.stdout, describe(shown, "show read the forged path")

    # The same run, its output aimed at the decoy: --resume refuses it.
    aimed = dataclasses.replace(manifest, output=str(decoy))
    (run_dir / "manifest.json").write_bytes(aimed.to_bytes())
    resumed = run_cli(*args, "--retry-failed", "--resume", first["run_id"])
    refused(resumed, 1, str(decoy), "--resume")
    assert decoy.read_bytes() == b"[]\n" and decoy_failed.read_bytes() == SECRET
    assert victim.read_bytes() == SECRET


# -- symlinks where asyncproc writes -----------------------------------------------------


def test_symlinks_planted_at_lock_files_are_never_written_through(tmp_path: Path) -> None:
    args, output, clean = _job(tmp_path)
    victim = _victim(tmp_path)
    ck = tmp_path / "ck"
    ck.mkdir(mode=0o700)
    planted = [ck / ".lock", output.with_name(".result.json.asyncproc.lock")]
    for link in planted:
        link.symlink_to(victim)
        refused(run_cli(*args), 1, "lock file", "symbolic link")
        assert victim.read_bytes() == SECRET
        link.unlink()
    _crashed(args)
    run_lock = only_run_dir(ck) / "lock"
    run_lock.unlink()
    run_lock.symlink_to(victim)
    refused(run_cli(*args), 1, "symbolic link")
    assert victim.read_bytes() == SECRET
    run_lock.unlink()
    run_ok(*args)
    assert output.read_bytes() == clean


def test_a_symlink_at_a_predictable_temporary_name_is_not_followed(tmp_path: Path) -> None:
    args, output, clean = _job(tmp_path)
    victim = _victim(tmp_path)
    _crashed(args)
    run_id = only_run_dir(tmp_path / "ck").name
    # Where the merge used to write: .<name>.<run id>.tmp, a name anyone could predict.
    for name in (f".result.json.{run_id}.tmp", f".result.failed.jsonl.{run_id}.tmp"):
        output.with_name(name).symlink_to(victim)
    run_ok(*args)
    assert victim.read_bytes() == SECRET
    assert not output.is_symlink() and output.read_bytes() == clean


# -- directories that others can write ---------------------------------------------------


def test_checkpoint_and_run_directories_others_can_write_arerefused(tmp_path: Path) -> None:
    args, output, clean = _job(tmp_path)
    ck = tmp_path / "ck"
    ck.mkdir()
    ck.chmod(0o777)
    refused(run_cli(*args), 2, "writable by others", f"chmod go-w {ck}")
    ck.chmod(0o700)

    _crashed(args)
    run_dir = only_run_dir(ck)
    (run_dir / "segments").chmod(0o777)
    refused(run_cli(*args), 2, "segments", "writable by others")
    (run_dir / "segments").chmod(0o700)
    run_ok(*args)
    assert output.read_bytes() == clean


def test_checkpoint_and_run_directories_of_another_user_arerefused(tmp_path: Path) -> None:
    args, output, clean = _job(tmp_path)
    ck = tmp_path / "ck"
    ck.mkdir()
    other = give_to_another_user(ck)
    refused(run_cli(*args), 2, f"belongs to uid {other}", "--checkpoint")
    take_back(ck)
    ck.chmod(0o700)

    _crashed(args)
    run_dir = only_run_dir(ck)
    give_to_another_user(run_dir)
    refused(run_cli(*args), 2, "run directory", f"belongs to uid {other}")
    take_back(run_dir)
    run_ok(*args)
    assert output.read_bytes() == clean


def test_a_checkpoint_directory_planted_in_a_shared_directory_isrefused(tmp_path: Path) -> None:
    """Like /tmp: world-writable and sticky. Another user made ``.asyncproc`` there first."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    source = write_lines(tmp_path / "input.txt", numbered_lines(10))
    planted = shared / ".asyncproc"
    planted.mkdir()
    other = give_to_another_user(planted)
    proc = run_cli("run", "--input", source, "--output", shared / "out.json")
    refused(proc, 2, str(planted), f"belongs to uid {other}")
    assert not (shared / "out.json").exists()


def _umask_zero() -> None:
    os.umask(0)


def test_run_data_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    module = write_module(tmp_path / "failing.py", FAILING)
    args, output, _ = _job(tmp_path)
    args = [*args, "--processor", f"{module}:work", "--retries", "0"]
    env = {**os.environ, "FAIL": "1"}

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cli_command(*args, *extra), capture_output=True, text=True, timeout=60,
            env=env, stdin=subprocess.DEVNULL, preexec_fn=_umask_zero, check=False,
        )  # fmt: skip

    crashed = run("--simulate-crash", "30")
    assert crashed.returncode == 3, describe(crashed)
    ck = tmp_path / "ck"
    run_dir = only_run_dir(ck)
    private = [p for p in (ck, *ck.rglob("*")) if not p.is_symlink()]
    assert {p.suffix for p in private} >= {".ckpt", ".out", ".dead", ".json"}, private
    for path in private:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path}: {mode:04o}"
    assert stat.S_IMODE(output.with_name(".result.json.asyncproc.lock").stat().st_mode) == 0o600
    finished = run()
    assert finished.returncode == 4, describe(finished)  # finished with failed items
    failed = output.with_name("result.failed.jsonl")
    assert stat.S_IMODE(failed.stat().st_mode) == 0o600
    assert stat.S_IMODE(output.stat().st_mode) == 0o666, "the output itself follows the umask"
    assert run_dir.is_dir()


# -- worker processes --------------------------------------------------------------------


def test_worker_processes_ignore_modules_in_the_working_directory(tmp_path: Path) -> None:
    args, output, clean = _job(tmp_path, items=200)
    marker = tmp_path / "shadowed"
    (tmp_path / "anyio.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nraise ImportError('a stray anyio.py')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-m", "asyncproc", *map(str, args), "--processes", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert orjson.loads(proc.stdout)["processes"] == 2
    assert not marker.exists(), "a child imported the stray module from its working directory"
    assert output.read_bytes() == clean


def test_a_manifest_naming_another_run_cannot_aim_cleanup_at_it(tmp_path: Path) -> None:
    """A forged manifest claiming another run's id makes only its own run damaged:
    cleanup never deletes the run it names."""
    args, _, _ = _job(tmp_path)
    older = summary_of(run_cli(*args, "--new-run", check=0))["run_id"]
    newer = summary_of(run_cli(*args, "--new-run", check=0))["run_id"]
    assert older != newer
    forged_dir = tmp_path / "ck" / older
    manifest = read_manifest(forged_dir)
    (forged_dir / "manifest.json").write_bytes(
        dataclasses.replace(manifest, run_id=newer).to_bytes()
    )
    runs = orjson.loads(run_cli("list", "--json", "--checkpoint", tmp_path / "ck").stdout)
    listed = {r["run_id"]: r["status"] for r in runs}
    assert listed == {older: "damaged", newer: "completed"}, listed
    run_cli("cleanup", "--keep", "0", "--checkpoint", tmp_path / "ck", check=0)
    assert forged_dir.is_dir(), "a damaged run is only ever deleted on purpose"
    assert not (tmp_path / "ck" / newer).exists(), "the finished run is cleaned up by its own id"
