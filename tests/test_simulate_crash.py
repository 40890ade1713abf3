"""``--simulate-crash N`` lands after exactly N committed items, whatever the batch size
and the number of units; from Python it raises :class:`asyncproc.SimulatedCrash`."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import (
    expected_text_stats_array,
    numbered_lines,
    run_args,
    run_cli,
    run_ok,
    run_status,
    write_lines,
)

import asyncproc


@pytest.mark.parametrize(("crash", "batch", "workers"), [(4, 3, 1), (10, 4, 3), (7, 1000, 2)])
def test_crash_lands_on_the_exact_item_count(
    crash: int, batch: int, workers: int, tmp_path: Path
) -> None:
    source = write_lines(tmp_path / "input.txt", numbered_lines(60))
    output, ck = tmp_path / "out.json", tmp_path / "ck"
    args = [*run_args(source, output, ck), "--batch-size", str(batch), "--workers", str(workers)]
    crashed = run_cli(*args, "--simulate-crash", str(crash), "--concurrency", "4", check=3)
    assert f"simulated crash after {crash} committed items" in crashed.stderr, crashed.stderr
    assert f"checkpoint directory {ck}" in crashed.stderr, crashed.stderr
    status = run_status(ck)
    assert status["processed"] + status["failed"] == crash, status
    assert status["status"] == "interrupted", status
    summary = run_ok(*args)
    assert summary["resumed"] is True
    assert output.read_bytes() == expected_text_stats_array(source.read_bytes())


def test_python_api_raises_simulated_crash_and_resumes(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "input.txt", numbered_lines(30))
    output, ck = tmp_path / "out.json", tmp_path / "ck"
    with pytest.raises(asyncproc.SimulatedCrash) as crash:
        asyncproc.run_file(source, output, checkpoint_dir=ck, batch_size=3, simulate_crash=4,
                           concurrency=2, quiet=True)  # fmt: skip
    assert "after 4 committed items" in str(crash.value) and "--" not in str(crash.value)
    (view,) = asyncproc.list_runs(ck)
    assert (view.done, view.status) == (4, asyncproc.RunStatus.INTERRUPTED)
    summary = asyncproc.run_file(source, output, checkpoint_dir=ck, batch_size=3, quiet=True)
    assert summary.resumed and summary.processed == 30
    assert output.read_bytes() == expected_text_stats_array(source.read_bytes())
