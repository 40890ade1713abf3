"""The keyed benchmark keeps working (a tiny size; figures are in the README)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import CLI_TIMEOUT


def test_keyed_benchmark_smoke() -> None:
    bench = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_keyed.py"
    proc = subprocess.run(
        [sys.executable, str(bench), "--sizes", "1000", "--interval", "100", "--json"],
        capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert '"keys": 1000' in proc.stdout
