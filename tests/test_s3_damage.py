"""A committed part of a segment gone from S3 (moto's server on loopback) is damage.

An object store keeps a segment as numbered part objects. If one the checkpoint counts
on is gone while a later one exists (written after the last checkpoint, before a
crash), the total length still adds up: the resume must not read the later bytes in
its place, and must finish with the clean run's bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import describe, numbered_lines, run_cli, summary_of, write_lines

import asyncproc
from asyncproc.storage.location import Location

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_a_missing_part_is_damage_not_a_shorter_segment(
    tmp_path: Path, s3_server: Any, s3_bucket: str
) -> None:
    source = write_lines(tmp_path / "in.txt", numbered_lines(400))
    base = f"s3://{s3_bucket}/{tmp_path.name}"
    fs = Location(base, s3_server.options()).fs
    args: list[str | Path] = [
        "run", "--input", source, "--output", tmp_path / "out.json", "--checkpoint",
        f"{base}/ck", "--batch-size", "50", "--concurrency", "4", "--workers", "1",
        *(f"--storage-option={k}={v}" for k, v in s3_server.options().items()),
    ]  # fmt: skip
    crashed = run_cli(*args, "--simulate-crash", "200", cwd=tmp_path)
    assert crashed.returncode == 3, describe(crashed)

    found = fs.find(f"{s3_bucket}/{tmp_path.name}/ck")
    parts = sorted(p for p in found if "/segments/" in p and ".out/.part-" in p)
    assert len(parts) >= 3, parts  # the marker and at least two parts of 50+ items
    # Part 1 is lost; a part past the committed ones (as a crash leaves) holds as many bytes.
    first, last = parts[1], parts[-1]
    assert first.endswith(".part-00000001"), parts
    later = f"{last[:-8]}{int(last[-8:]) + 1:08d}"
    fs.pipe_file(later, fs.cat_file(first))
    fs.rm_file(first)

    resumed = run_cli(*args, cwd=tmp_path)
    assert resumed.returncode == 0, describe(resumed, "the resume should redo the unit")
    assert summary_of(resumed)["resumed"] is True
    clean = tmp_path / "clean.json"
    asyncproc.run_file(source, clean, checkpoint_dir=tmp_path / "ck", quiet=True)
    assert (tmp_path / "out.json").read_bytes() == clean.read_bytes()
    assert "unit 0" in resumed.stderr, describe(resumed, "the damaged unit should be named")
