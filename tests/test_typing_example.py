"""The typed example is also a working program."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import CLI_TIMEOUT

EXAMPLE = Path(__file__).with_name("typing_example.py")


def test_typing_example_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), str(tmp_path)],
        capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
