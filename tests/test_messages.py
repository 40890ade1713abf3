"""Messages a new user reads: each names what to do, with the numbers actually in force."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from conftest import error_lines, logging_processor, numbered_lines, run_args, run_cli, write_lines
from faultkit import assert_no_traceback, refused, write_module

from asyncproc.cli.main import _guarded

ALL_FAIL = logging_processor(
    """
async def work(item):
    log_call(item)
    raise ConnectionError("the API is down")
"""
)

SOME_FAIL = """
def work(item):
    if item.endswith("7"):
        raise ValueError("no good")
    return item
"""


def test_an_early_stop_names_the_configured_count(tmp_path: Path) -> None:
    """The default batch commits 1,000 failures at once: the line still says 100."""
    source = write_lines(tmp_path / "input.txt", numbered_lines(3000))
    module = write_module(tmp_path / "down.py", ALL_FAIL)
    args = [*run_args(source, tmp_path / "out.json", tmp_path / "ck"),
            "--processor", f"{module}:work", "--retries", "0"]  # fmt: skip
    proc = run_cli(*args, env={"ASYNCPROC_TEST_CALL_LOG": str(tmp_path / "calls")}, check=1)
    assert_no_traceback(proc)
    (line,) = error_lines(proc.stderr)
    assert "the first 100 items all failed" in line, line
    assert "--early-stop 0" in line, line


def test_retry_failed_without_the_processor_names_the_option(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "input.txt", numbered_lines(20))
    module = write_module(tmp_path / "flaky.py", SOME_FAIL)
    args = run_args(source, tmp_path / "out.json", tmp_path / "ck")
    run_cli(*args, "--processor", f"{module}:work", check=4)
    proc = run_cli(*args, "--retry-failed")
    line = refused(proc, 2, f"add --processor {module}:work")
    assert "--new-run" not in line, line
    run_cli(*args, "--retry-failed", "--processor", f"{module}:work", check=4)


def test_show_names_work_units_as_the_readme_does(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "input.txt", numbered_lines(20))
    ck = tmp_path / "ck"
    args = run_args(source, tmp_path / "out.json", ck)
    run_cli(*args, "--simulate-crash", "5", "--batch-size", "5", check=3)
    (run_id,) = [p.name for p in ck.iterdir() if p.name.startswith("run_")]
    shown = run_cli("show", run_id, "--checkpoint", ck, check=0).stdout
    assert "units" in shown and "unit" in shown.split("units", 1)[1], shown
    assert "shard" not in shown, shown


def test_a_ctrl_c_outside_the_run_loop_is_no_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C while a command plans or waits for an answer: click turns it into Abort."""

    def pressed() -> None:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise click.exceptions.Abort() from None

    def pressed_late() -> None:
        raise KeyboardInterrupt

    for call in (pressed, pressed_late):
        assert _guarded(call) == 130
        line = capsys.readouterr().err
        assert line.startswith("asyncproc: interrupted by you (Ctrl-C); run the same command"), line
        assert "error" not in line, line


def test_the_options_to_add_are_named_as_the_caller_spells_them() -> None:
    from asyncproc._errors import cli_messages
    from asyncproc._options import Options

    stored = Options(processor="p.py:work", processor_args={"latency": "0.1"}).to_dict()
    with cli_messages():
        assert Options().to_add(stored) == (
            "add --processor p.py:work, add --processor-arg latency=0.1"
        )
        given = Options(processor="p.py:work", processor_args={"x": "1"})
        assert given.to_add({**stored, "processor_args": {}}) == "leave out --processor-arg"
    assert Options().to_add(stored).startswith("add processor='p.py:work'")
