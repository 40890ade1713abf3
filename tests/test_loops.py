"""``--loop``: uvloop and asyncio give the same bytes; the summary names the loop."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import error_lines, numbered_lines, run_cmd, run_ok, write_lines

import asyncproc
from asyncproc import ConfigError, Summary
from asyncproc.engine.loops import backend_options


def test_both_loops_give_identical_bytes(tmp_path: Path) -> None:
    pytest.importorskip("uvloop")
    source = write_lines(tmp_path / "in.txt", numbered_lines(3000))
    outputs = {}
    for loop in ("asyncio", "uvloop"):
        out = tmp_path / f"{loop}.jsonl"
        summary = run_ok(
            "run", "--input", source, "--output", out, "--loop", loop, "--workers", "3",
            "--batch-size", "64", "--processor", "sleep", "--processor-arg", "latency=0.0005",
            "--concurrency", "50", "-q",
        )  # fmt: skip
        assert summary["loop"] == loop
        outputs[loop] = out.read_bytes()
    assert outputs["asyncio"] == outputs["uvloop"]


def test_run_file_reports_its_loop(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.txt", ["a", "b"])
    summary = asyncproc.run_file(source, tmp_path / "out.json", loop="asyncio", quiet=True)
    assert summary.loop == "asyncio"


def test_missing_uvloop_is_one_clear_line(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.txt", ["a"])
    hide = (
        "import sys; sys.modules['uvloop'] = None; from asyncproc.cli.main import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    proc = run_cmd(
        [sys.executable, "-c", hide, "run", "--input", str(source), "--output",
         str(tmp_path / "o.json"), "--loop", "uvloop"],
    )  # fmt: skip
    assert proc.returncode == 2
    assert len(error_lines(proc.stderr)) == 1
    assert "pip install 'asyncproc[fast]'" in proc.stderr


def test_bad_loop_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="auto, asyncio or uvloop"):
        backend_options("trio")
    assert backend_options("asyncio") == {}


def test_old_summaries_without_loop_still_load() -> None:
    data: dict[str, object] = {key: 0 for key in Summary.__dataclass_fields__ if key != "loop"}
    data["status"] = "completed"  # a stored status is read as the RunStatus it names
    assert Summary.from_dict(data).loop == "asyncio"


def test_auto_without_uvloop_is_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)
    assert backend_options("auto") == {}
    with pytest.raises(ConfigError):
        backend_options("uvloop")
