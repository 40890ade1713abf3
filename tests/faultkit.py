"""Helpers shared by the fault-injection tests: the standard job, run state on disk.

The standard job is a multi-shard run of the default ``text_stats`` processor into a
``.json`` array, small enough to take a fraction of a second and large enough that every
shard commits several checkpoint generations.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from conftest import describe, error_lines, run_cli, run_dirs, summary_of

from asyncproc.runs.rundir import local_run
from asyncproc.storage.records import Manifest, UnitCheckpoint

ITEMS = 3000
WORKERS = 3
BATCH = 100

Arg = str | os.PathLike[str]


def job_args(source: Path, output: Path, ck: Path, *extra: Arg) -> list[Arg]:
    """The standard multi-shard job: 3 shards, 100 items per checkpoint."""
    return [
        "run", "--input", source, "--output", output, "--checkpoint", ck,
        "--workers", str(WORKERS), "--batch-size", str(BATCH), *extra,
    ]  # fmt: skip


def write_module(path: Path, source: str) -> Path:
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


def assert_no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr, describe(proc, "a traceback on stderr")


def refused(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """One error line, no traceback, no summary; the line holds every word given."""
    assert_no_traceback(proc)
    assert proc.returncode == code, describe(proc, f"expected exit code {code}")
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and proc.stdout.strip() == "", describe(proc)
    for word in words:
        assert word in lines[0], describe(proc, f"the error should mention {word!r}")
    return lines[0]


def rerun_ok(
    args: list[Arg], env: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """Run the same command again, no fault armed: the promise is that this one rerun
    finishes (exit 0), whatever the fault was."""
    proc = run_cli(*args, env=env)
    assert_no_traceback(proc)
    assert proc.returncode == 0, describe(proc, "the rerun after the fault did not exit 0")
    return summary_of(proc), proc


def only_run_dir(ck: Path) -> Path:
    runs = run_dirs(ck)
    assert len(runs) == 1, f"expected one run directory under {ck}, found {runs}"
    return runs[0]


def read_manifest(run_dir: Path) -> Manifest:
    path = run_dir / "manifest.json"
    return Manifest.from_bytes(path.read_bytes(), str(path))


def read_checkpoint(path: Path) -> UnitCheckpoint:
    return UnitCheckpoint.from_bytes(path.read_bytes(), str(path))


def slot_files(run_dir: Path, shard_id: int) -> list[Path]:
    """The checkpoint slots of one shard that exist, oldest generation first."""
    files = sorted((run_dir / "units").glob(f"{shard_id:04d}.*.ckpt"))
    return sorted(files, key=lambda p: read_checkpoint(p).generation)


def load_problems(run_dir: Path) -> dict[int, tuple[str, ...]]:
    """What loading each shard's newest good checkpoint had to skip."""
    manifest = read_manifest(run_dir)
    return {
        s.unit_id: local_run(run_dir).unit_store(s.unit_id).load().problems for s in manifest.units
    }


def state_left(run_dir: Path) -> list[str]:
    """Files left in a run directory, relative to it."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())


def json_lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


def unit_end(manifest: Manifest, unit_id: int) -> int:
    """Where a unit ends: the next unit's start, or the end of the input."""
    starts = sorted(u.start for u in manifest.units)
    start = next(u.start for u in manifest.units if u.unit_id == unit_id)
    later = [s for s in starts if s > start]
    return later[0] if later else manifest.input.size


def unit_end_index(manifest: Manifest, unit_id: int) -> int:
    """The index just past a unit's last item."""
    start = next(u.start for u in manifest.units if u.unit_id == unit_id)
    later = sorted((u.start, u.first_index) for u in manifest.units if u.start > start)
    return later[0][1] if later else manifest.total_items
