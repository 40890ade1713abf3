"""The README's run-management and Python API examples run as written."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    CLI_TIMEOUT,
    REPO,
    SAMPLE_INPUT,
    expected_jsonl,
    expected_text_stats_array,
    numbered_lines,
    text_items,
    write_lines,
)

FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(heading: str, language: str) -> list[str]:
    """The fenced ``language`` blocks of the README section under ``## heading``."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end >= 0 else len(text)]
    return [body for lang, body in FENCE.findall(section) if lang == language]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    shutil.copy(SAMPLE_INPUT, tmp_path / "data" / "sample_input.txt")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "asyncproc"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m asyncproc "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    (bin_dir / "python").symlink_to(sys.executable)
    return tmp_path


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{cwd / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False
    )


def test_run_management_example(workdir: Path) -> None:
    (script,) = blocks("Run management", "bash")
    proc = _run(["bash", "-euo", "pipefail", "-c", script], workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "interrupted" in proc.stdout and '"status": "interrupted"' in proc.stdout
    # One run, crashed and then resumed to completion: cleanup --keep 1 keeps it.
    assert "removed 0 run(s)" in proc.stdout, proc.stdout
    assert (workdir / "out.json").is_file()


# Runs the coroutine the "Files" example defines; the example itself only defines it.
RUN_MAIN = """

import asyncio

asyncio.run(main())
"""


def test_python_api_examples(workdir: Path) -> None:
    files, keyed, manual = blocks("Python API", "python")
    assert "async def main() -> None:" in files and "process_file(" in files, files
    items = numbered_lines(300)
    write_lines(workdir / "in.txt", items)  # the input the process_file example names
    outputs = []
    for number, source in enumerate((files + RUN_MAIN, keyed, manual)):
        path = workdir / f"example_{number}.py"
        path.write_text(source, encoding="utf-8")
        proc = _run([sys.executable, str(path)], workdir)
        assert proc.returncode == 0, f"example {number}:\n{source}\n{proc.stderr}"
        outputs.append(proc.stdout)
    assert outputs[0].split() == ["10", "None"]
    assert "ItemsReport(succeeded=99, failed=1, skipped=0)" in outputs[1]
    assert "39 40 97.5 1" in outputs[2] and "page 7 timed out" in outputs[2]

    # run_file: the default processor's records of the sample, checkpoints under ck/.
    sample = SAMPLE_INPUT.read_bytes()
    assert (workdir / "out.json").read_bytes() == expected_text_stats_array(sample)
    assert [r["status"] for r in _runs(workdir, "ck")] == ["completed"]
    # process_file with a callable: each item shouted, one JSON line per item, in order;
    # its run lives in the default checkpoint directory, .asyncproc beside the output.
    shouted = ((i, s.upper()) for i, s in enumerate(text_items((workdir / "in.txt").read_bytes())))
    assert (workdir / "out.jsonl").read_bytes() == expected_jsonl(shouted)
    (run,) = _runs(workdir, ".asyncproc")
    assert (run["status"], run["processed"], run["failed"]) == ("completed", len(items), 0), run


def _runs(workdir: Path, checkpoint: str) -> list[dict[str, Any]]:
    proc = _run(["asyncproc", "list", "--json", "--checkpoint", checkpoint], workdir)
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout)
    assert isinstance(runs, list)
    return runs


def test_moving_from_the_older_tools_example(workdir: Path) -> None:
    """The older loader tool's usage, with only the import line from asyncproc.compat."""
    (source,) = blocks("Moving from the older tools", "python")
    assert source.startswith("from asyncproc.compat import ")
    path = workdir / "older_loader.py"
    path.write_text(source, encoding="utf-8")
    proc = _run([sys.executable, str(path)], workdir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["99", "1", "99.0"]
    (run,) = _runs(workdir, "checkpoints")
    assert (run["status"], run["description"], run["processed"]) == (
        "completed",
        "Nightly load",
        99,
    )
