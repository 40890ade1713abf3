"""The project's own rules, checked by the suite: lint, types, docs that match CI."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; install the test extra: pip install -e '.[test]'")
    return found


def test_ruff_is_clean() -> None:
    result = subprocess.run(
        [_tool("ruff"), "check", "asyncproc", "tests", "benchmarks"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def test_ruff_format_is_clean(tmp_path: Path) -> None:
    """The code and the README's Python examples are formatted as ruff formats them."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for n, block in enumerate(PYTHON_BLOCK.findall(readme)):
        (tmp_path / f"readme_block_{n}.py").write_text(block)
    targets = ["asyncproc", "tests", "benchmarks", str(tmp_path)]
    result = subprocess.run(
        [_tool("ruff"), "format", "--check", *targets],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rooms_import_downward_only() -> None:
    """The layering contract in pyproject.toml ([tool.importlinter]) holds."""
    result = subprocess.run(
        [_tool("lint-imports")], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(
        line for line in readme.splitlines() if "pip install -e '.[test]'" in line and "&&" in line
    )
    assert command in ci.splitlines(), f"CI does not run the README's test command: {command}"
