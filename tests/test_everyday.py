"""Everyday use, as a new user meets it: loud failures, an early stop, visible stalls,
runs found from anywhere, damaged runs deletable, prompts, hints, processors from the
working directory, throughput over running time, messages in the caller's terms."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from conftest import (
    CLI_TIMEOUT,
    EXIT_ITEMS_FAILED,
    cli_command,
    describe,
    error_lines,
    logging_processor,
    numbered_lines,
    run_args,
    run_cli,
    wait_until,
    write_lines,
)
from faultkit import assert_no_traceback, write_module

import asyncproc
from asyncproc.runs import index
from asyncproc.runs.views import RunView
from asyncproc.storage.records import RunStatus

SOME_FAIL = """
async def work(item):
    if item.endswith(("end3", "end7")):
        raise ValueError(f"no good: {item}")
    return {"seen": item}
"""


def test_failed_items_exit_4_with_a_closing_line_even_when_quiet(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "input.txt", numbered_lines(100))
    module = write_module(tmp_path / "some_fail.py", SOME_FAIL)
    output, ck = tmp_path / "out.json", tmp_path / "ck"
    args = [*run_args(source, output, ck), "--processor", f"{module}:work", "--retries", "0"]
    proc = run_cli(*args, "--quiet", check=EXIT_ITEMS_FAILED)
    summary = json.loads(proc.stdout)
    (closing,) = [line for line in proc.stderr.splitlines() if line.strip()]
    assert f"{summary['failed']} of 100 items failed" in closing, closing
    assert "first: item 3 'line 000003" in closing and "ValueError: no good" in closing
    assert str(output.with_name("out.failed.jsonl")) in closing and f"{ck.resolve()}" in closing
    assert summary["checkpoint_dir"] == str(ck.resolve())

    clean = run_cli(*run_args(source, tmp_path / "clean.json", tmp_path / "ck2"), check=0)
    assert clean.stderr.splitlines()[-1].startswith("asyncproc: done: 100 items into")
    assert str((tmp_path / "ck2").resolve()) in clean.stderr.splitlines()[-1]


ALL_FAIL = logging_processor(
    """
async def work(item):
    log_call(item)
    raise ConnectionError("the API is down")
"""
)


def test_a_run_whose_first_items_all_fail_stops_early(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "input.txt", numbered_lines(3000))
    module = write_module(tmp_path / "down.py", ALL_FAIL)
    log, ck = tmp_path / "calls.log", tmp_path / "ck"
    args = [*run_args(source, tmp_path / "out.json", ck), "--processor", f"{module}:work",
            "--retries", "0", "--batch-size", "50", "--concurrency", "4"]  # fmt: skip
    proc = run_cli(*args, env={"ASYNCPROC_TEST_CALL_LOG": str(log)}, check=1)
    assert_no_traceback(proc)
    (line,) = error_lines(proc.stderr)
    assert "items all failed" in line and "ConnectionError: the API is down" in line, line
    assert "--early-stop 0" in line and f"checkpoint directory {ck}" in line, line
    calls = len(log.read_text().splitlines())
    assert 100 <= calls < 1000, f"{calls} of 3000 items tried before the stop"
    status = json.loads(run_cli("status", "--checkpoint", ck, "--json", check=0).stdout)
    assert status["status"] == "failed" and status["failed"] >= 100


def test_the_progress_bar_shows_failures() -> None:
    from asyncproc.cli.progress import BarProgress

    bar = BarProgress()
    bar.started(100, 0, 0)
    try:
        bar.committed(10, 0)
        assert "failed" not in bar._label()
        bar.committed(7, 3)
        assert "3 failed" in bar._label()
    finally:
        bar.stopped()


STALLING = """
import os
import time


def work(item):
    if item == os.environ["STALL_ITEM"]:
        while not os.path.exists(os.environ["RELEASE"]):  # held until the test lets go
            time.sleep(0.01)
    return {"seen": item}
"""


def test_a_stalled_item_is_named_at_growing_intervals(tmp_path: Path) -> None:
    lines = numbered_lines(200)
    source = write_lines(tmp_path / "input.txt", lines)
    module = write_module(tmp_path / "stall.py", STALLING)
    release, err = tmp_path / "release", tmp_path / "stderr"
    env = {**os.environ, "STALL_ITEM": lines[5].strip(), "RELEASE": str(release)}
    argv = cli_command(*run_args(source, tmp_path / "out.json", tmp_path / "ck"),
                       "--processor", f"{module}:work", "--stall-warning", "0.3")  # fmt: skip
    with err.open("w") as stderr:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        warned = re.compile(r"item 5 has been in flight for (\d+)s, holding back the commits "
                            r"of unit 0: 'line 000005")  # fmt: skip
        wait_until(lambda: len(warned.findall(err.read_text())) >= 3, "three warnings", proc)
        release.touch()
        assert proc.wait(timeout=CLI_TIMEOUT) == 0, err.read_text()
    finally:
        proc.kill()
    waits = [int(w) for w in warned.findall(err.read_text())]
    assert waits[:3] == sorted(waits[:3]) and waits[2] >= 1, waits  # 0.3 s, 0.6 s, 1.2 s


def _crashed_run(tmp_path: Path, where: Path) -> tuple[str, Path]:
    """An interrupted run whose checkpoint directory is beside its output, in ``where``."""
    where.mkdir(parents=True, exist_ok=True)
    source = write_lines(where / "input.txt", numbered_lines(40))
    args: list[str | Path] = ["run", "--input", source, "--output", where / "out.json",
                              "--batch-size", "5", "--concurrency", "1", "--simulate-crash",
                              "10"]  # fmt: skip
    proc = run_cli(*args, check=3)
    (run_dir,) = (where / ".asyncproc").glob("run_*")
    assert str((where / ".asyncproc").resolve()) in proc.stderr
    return run_dir.name, where / ".asyncproc"


def test_list_and_status_say_where_they_looked_and_find_runs_elsewhere(
    tmp_path: Path, _private_run_index: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    empty = run_cli("list", "--all", check=0, cwd=tmp_path)
    assert "no runs under .asyncproc (the default) and in the run index" in empty.stdout
    run_id, ck = _crashed_run(tmp_path, elsewhere)
    assert index.index_path() == _private_run_index / "asyncproc" / "runs.jsonl"
    assert str(ck.resolve()) in index.index_path().read_text()

    here = tmp_path / "somewhere-else"
    here.mkdir()
    listed = run_cli("list", "--all", "--json", check=0, cwd=here)
    (entry,) = json.loads(listed.stdout)
    assert (entry["run_id"], entry["checkpoint_dir"]) == (run_id, str(ck.resolve()))
    table = run_cli("list", "--all", check=0, cwd=here)
    assert "1 more checkpoint directory from the run index" in table.stderr, table.stderr
    status = run_cli("status", "--all", "--json", check=0, cwd=here)
    assert json.loads(status.stdout)["run_id"] == run_id
    assert f"run {run_id} is under {ck.resolve()}" in status.stderr
    shown = run_cli("show", "--run-id", run_id, "--json", check=0, cwd=here)
    assert json.loads(shown.stdout)["processed"] == 10
    explicit = run_cli("list", "--checkpoint", here / ".asyncproc", check=0, cwd=here)
    assert "no runs under" in explicit.stdout and "run index" not in explicit.stdout


def test_a_damaged_run_is_listed_and_can_be_deleted(tmp_path: Path) -> None:
    run_id, ck = _crashed_run(tmp_path, tmp_path / "job")
    (ck / run_id / "manifest.json").write_bytes(b"\x00 not a manifest")
    listed = run_cli("list", "--checkpoint", ck, "--json", check=0)
    (entry,) = json.loads(listed.stdout)
    assert (entry["run_id"], entry["status"]) == (run_id, "damaged")
    assert f"run {run_id} is damaged" in listed.stderr and "asyncproc delete" in listed.stderr
    table = run_cli("show", run_id, "--checkpoint", ck, check=0)
    assert "damaged" in table.stdout
    assert run_cli("status", "--checkpoint", ck, check=1).returncode == 1  # not resumable
    run_cli("delete", run_id, "--checkpoint", ck, "--yes", check=0)
    assert not (ck / run_id).exists()


def _answer(answer: str, *args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_command(*args), input=answer, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT, check=False)  # fmt: skip


def test_declining_a_prompt_exits_1_and_keeps_the_run(tmp_path: Path) -> None:
    run_id, ck = _crashed_run(tmp_path, tmp_path / "job")
    declined = _answer("n\n", "delete", run_id, "--checkpoint", ck)
    assert declined.returncode == 1, describe(declined)
    assert f"kept run {run_id}" in declined.stderr and (ck / run_id).is_dir()
    no_answer = _answer("", "delete", "--run-id", run_id, "--checkpoint", ck)
    assert no_answer.returncode == 1 and (ck / run_id).is_dir(), describe(no_answer)
    accepted = _answer("y\n", "delete", run_id, "--checkpoint", ck)
    assert accepted.returncode == 0 and not (ck / run_id).exists(), describe(accepted)


def test_the_older_tools_form_points_to_run(tmp_path: Path) -> None:
    proc = run_cli("--input", "in.txt", "--output", "out.json", check=2)
    (line,) = error_lines(proc.stderr)
    assert "asyncproc run --input in.txt --output out.json" in line, line


def test_a_module_processor_is_found_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "mymod.py").write_text("def shout(item):\n    return item.upper()\n")
    write_lines(tmp_path / "in.txt", ["a", "b"])
    console_script = Path(sys.executable).with_name("asyncproc")  # sys.path lacks the cwd
    argv = [str(console_script), "run", "--input", "in.txt", "--output", "out.jsonl",
            "--processor", "mymod:shout", "--quiet"]  # fmt: skip
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT, check=False)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert (tmp_path / "out.jsonl").read_text().splitlines() == [
        '{"index":0,"result":"A"}',
        '{"index":1,"result":"B"}',
    ]
    (run,) = asyncproc.list_runs(tmp_path / ".asyncproc")
    assert run.options["processor"] == f"{(tmp_path / 'mymod.py').resolve()}:shout"


def test_status_rate_leaves_out_the_time_the_run_was_stopped(tmp_path: Path) -> None:
    run_id, ck = _crashed_run(tmp_path, tmp_path / "job")
    run_cli("run", "--input", tmp_path / "job" / "input.txt", "--output",
            tmp_path / "job" / "out.json", "--batch-size", "5", "--concurrency", "1",
            "--simulate-crash", "5", check=3)  # fmt: skip
    manifest = orjson.loads((ck / run_id / "manifest.json").read_bytes())
    assert manifest["done_at_resume"] == 10 and manifest["resumed_at"] > manifest["created_at"]
    base = RunView(
        run_id="r", status=RunStatus.INTERRUPTED, input="i", output="o", total_items=1000,
        processed=300, failed=0, started_at=0.0, ended_at=None, updated_at=5000.0,
        options={}, holder=None, path=tmp_path / "r", resumed_at=4990.0, done_at_resume=200,
    )  # fmt: skip
    assert base.throughput == 10.0  # 100 items in the 10 s it ran, not 300 in 5000 s
    assert base.eta == 70.0


def test_python_errors_name_arguments_not_flags(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "input.txt", numbered_lines(10))
    with pytest.raises(asyncproc.ConfigError) as bad:
        asyncproc.run_file(source, tmp_path / "out.json", batch_size=0)
    assert str(bad.value) == "batch_size must be at least 1, got 0"
    ck = tmp_path / "ck"
    with pytest.raises(asyncproc.SimulatedCrash):
        asyncproc.run_file(source, tmp_path / "out.json", checkpoint_dir=ck, batch_size=2,
                           simulate_crash=4, quiet=True)  # fmt: skip
    with source.open("a") as fh:
        fh.write("one more line\n")
    with pytest.raises(asyncproc.InputChangedError) as changed:
        asyncproc.run_file(source, tmp_path / "out.json", checkpoint_dir=ck, quiet=True)
    assert "new_run=True" in str(changed.value) and "--" not in str(changed.value)
    with pytest.raises(asyncproc.RunNotFoundError) as missing:
        asyncproc.get_run("run_19990101_000000", ck)
    assert "list_runs(" in str(missing.value) and "--" not in str(missing.value)
    cli = run_cli("run", "--input", source, "--output", tmp_path / "o.json", "--batch-size", "0")
    assert "--batch-size must be at least 1" in cli.stderr
