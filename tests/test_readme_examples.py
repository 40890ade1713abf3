"""The README's run-management and Python API examples run as written."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CLI_TIMEOUT, REPO, SAMPLE_INPUT

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
    env.pop("ASYNCPROC_CRASH_AT", None)
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False
    )


def test_run_management_example(workdir: Path) -> None:
    (script,) = blocks("Run management", "bash")
    proc = _run(["bash", "-euo", "pipefail", "-c", script], workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "interrupted" in proc.stdout and '"status": "interrupted"' in proc.stdout
    assert "removed 0 run(s)" in proc.stdout or "removed 1 run(s)" in proc.stdout
    assert (workdir / "out.json").is_file()


def test_python_api_examples(workdir: Path) -> None:
    files, keyed, manual = blocks("Python API", "python")
    outputs = []
    for number, source in enumerate((files, keyed, manual)):
        path = workdir / f"example_{number}.py"
        path.write_text(source, encoding="utf-8")
        proc = _run([sys.executable, str(path)], workdir)
        assert proc.returncode == 0, f"example {number}:\n{source}\n{proc.stderr}"
        outputs.append(proc.stdout)
    assert outputs[0].split() == ["10", "None"]
    assert "ItemsReport(succeeded=99, failed=1, skipped=0)" in outputs[1]
    assert "39 40 97.5 1" in outputs[2] and "page 7 timed out" in outputs[2]
