"""Run management commands against real run directories made by real runs.

Unfinished runs come from ``--simulate-crash`` (exit 3: the manifest still says running
and nobody holds the lock, so the run shows as interrupted). Live runs are real
subprocesses whose processor waits for a gate file; the tests wait for the run's
checkpoint to exist, never for a fixed time.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import (
    CLI_TIMEOUT,
    checkpoint_files,
    cli_command,
    describe,
    error_lines,
    numbered_lines,
    run_cli,
    run_ok,
    wait_until,
    write_lines,
)

import asyncproc

STABLE_KEYS = {
    "run_id",
    "status",
    "input",
    "total_items",
    "processed",
    "failed",
    "started_at",
    "ended_at",
}
ITEMS = 200

FAILING = """
import anyio


async def work(item):
    await anyio.sleep(0.001)
    if int(item.split()[1]) % 3 == 0:
        raise ValueError(f"no multiples of three: {item.split()[1]}")
    return item
"""

GATED = """
import os
import time
from pathlib import Path

GATE = Path(os.environ["ASYNCPROC_TEST_GATE"])
STARTED = Path(os.environ["ASYNCPROC_TEST_STARTED"])


def work(item):
    if int(item.split()[1]) >= 3:
        STARTED.touch()
        while not GATE.exists():
            time.sleep(0.01)
    return item
"""


def _json(proc: subprocess.CompletedProcess[str]) -> Any:
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(describe(proc, f"stdout is not JSON: {exc}")) from None


def _base(source: Path, output: Path, ck: Path, *extra: str | Path) -> list[str | Path]:
    return ["run", "--input", source, "--output", output, "--checkpoint", ck, "--quiet", *extra]


def _crash(source: Path, output: Path, ck: Path, *extra: str | Path) -> None:
    run_cli(
        *_base(source, output, ck, "--processor", "sleep", "--processor-arg", "latency=0.001"),
        *("--concurrency", "1", "--batch-size", "5", "--simulate-crash", "5", *extra),
        check=3,
    )


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "input.txt", numbered_lines(ITEMS))


def _make_runs(tmp_path: Path) -> dict[str, Any]:
    """A completed run, then an interrupted one, in one checkpoint directory."""
    source = write_lines(tmp_path / "input.txt", numbered_lines(ITEMS))
    ck = tmp_path / "ck"
    done = run_ok(*_base(source, tmp_path / "done.json", ck))
    _crash(source, tmp_path / "crashed.json", ck)
    listed = _json(run_cli("list", "--checkpoint", ck, "--json", check=0))
    return {"ck": ck, "done": done["run_id"], "crashed": listed[0]["run_id"], "list": listed}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Shared by the tests that only read the runs."""
    return _make_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture
def own_runs(tmp_path: Path) -> dict[str, Any]:
    """For a test that changes the runs."""
    return _make_runs(tmp_path)


def test_list_json_newest_first_with_statuses(runs: dict[str, Any]) -> None:
    listed = runs["list"]
    assert [r["run_id"] for r in listed] == [runs["crashed"], runs["done"]]
    crashed, done = listed
    for row in listed:
        assert set(row) >= STABLE_KEYS, sorted(STABLE_KEYS - set(row))
        assert Path(row["input"]) == (runs["ck"].parent / "input.txt").resolve()
        assert row["total_items"] == ITEMS
    assert crashed["status"] == "interrupted"
    assert 5 <= crashed["processed"] < ITEMS
    assert crashed["ended_at"] is None
    assert done["status"] == "completed"
    assert (done["processed"], done["failed"], done["percent"]) == (ITEMS, 0, 100.0)
    assert done["ended_at"] is not None and done["started_at"] <= done["ended_at"]


def test_list_table(runs: dict[str, Any]) -> None:
    table = run_cli("list", "--checkpoint", runs["ck"], check=0).stdout
    assert runs["crashed"] in table and runs["done"] in table
    assert "interrupted" in table and "completed" in table
    assert f"{ITEMS}/{ITEMS} (100.0%)" in table
    rows = [line.split("│")[1].strip() for line in table.splitlines() if "│" in line]
    assert rows == [runs["crashed"], runs["done"]], "newest first"


def test_list_empty_directory(tmp_path: Path) -> None:
    proc = run_cli("list", "--checkpoint", tmp_path / "nothing", check=0)
    assert "no runs" in proc.stdout
    assert _json(run_cli("list", "--checkpoint", tmp_path / "nothing", "--json", check=0)) == []


def test_show_unfinished_run_has_shards_eta_and_options(runs: dict[str, Any]) -> None:
    shown = _json(run_cli("show", runs["crashed"], "--checkpoint", runs["ck"], "--json", check=0))
    assert set(shown) >= STABLE_KEYS
    assert shown["status"] == "interrupted"
    assert shown["options"]["batch_size"] == 5 and shown["options"]["processor"] == "sleep"
    (shard,) = shown["shards"]
    assert (shard["shard_id"], shard["start"], shard["items"]) == (0, 0, ITEMS)
    assert shard["processed"] == shown["processed"] and shard["attempts"] == 1
    assert shard["done"] is False and shard["checkpoint_at"] is not None
    assert shown["eta_s"] is not None and shown["eta_s"] > 0
    assert shown["items_per_s"] > 0
    table = run_cli("show", runs["crashed"], "--checkpoint", runs["ck"], check=0).stdout
    assert "units" in table and f"0-{shard['end']}" in table and "ETA" in table


def test_show_completed_run(runs: dict[str, Any]) -> None:
    shown = _json(run_cli("show", runs["done"], "--checkpoint", runs["ck"], "--json", check=0))
    assert shown["status"] == "completed" and shown["eta_s"] is None
    assert shown["shards"] == [], "a completed run's checkpoints are cleared"
    assert shown["recent_failures"] == []


def test_show_recent_failures_of_unfinished_and_finished_runs(source: Path, tmp_path: Path) -> None:
    processor = tmp_path / "failing.py"
    processor.write_text(textwrap.dedent(FAILING))
    ck = tmp_path / "ck"
    spec = ("--processor", f"{processor}:work", "--retries", "0", "--batch-size", "10")
    run_cli(*_base(source, tmp_path / "a.json", ck, *spec, "--concurrency", "1"),
            "--simulate-crash", "20", check=3)  # fmt: skip
    run_id = _json(run_cli("list", "--checkpoint", ck, "--json", check=0))[0]["run_id"]
    shown = _json(run_cli("show", run_id, "--checkpoint", ck, "--json", "--failures", "3"))
    failures = shown["recent_failures"]
    assert 1 <= len(failures) <= 3 and shown["failed"] >= len(failures)
    indexes = [f["index"] for f in failures]
    assert indexes == sorted(indexes, reverse=True) and all(i % 3 == 0 for i in indexes)
    assert failures[0]["error_type"] == "ValueError"
    assert "no multiples of three" in failures[0]["error"]

    run_ok(*_base(source, tmp_path / "a.json", ck, *spec))  # resume to the end
    shown = _json(run_cli("show", run_id, "--checkpoint", ck, "--json", check=0))
    assert shown["status"] == "completed" and shown["failed"] == 67
    assert [f["index"] for f in shown["recent_failures"]] == [198, 195, 192, 189, 186]


def test_show_unknown_run_is_one_error_line(tmp_path: Path) -> None:
    proc = run_cli("show", "run_19990101_000000", "--checkpoint", tmp_path, check=1)
    (line,) = error_lines(proc.stderr)
    assert "asyncproc list" in line and "Traceback" not in proc.stderr


def test_status_defaults_to_newest_unfinished_run(runs: dict[str, Any]) -> None:
    status = _json(run_cli("status", "--checkpoint", runs["ck"], "--json", check=0))
    assert status["run_id"] == runs["crashed"] and status["status"] == "interrupted"
    assert len(status["shards"]) == 1
    by_id = _json(run_cli("status", runs["done"], "--checkpoint", runs["ck"], "--json", check=0))
    assert by_id["status"] == "completed"


def test_status_watch_stops_when_run_is_not_running(runs: dict[str, Any]) -> None:
    proc = run_cli("status", "--checkpoint", runs["ck"], "--watch", "0.05", check=0)
    assert runs["crashed"] in proc.stdout and "interrupted" in proc.stdout


def test_status_without_unfinished_run_fails(source: Path, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    run_ok(*_base(source, tmp_path / "done.json", ck))
    proc = run_cli("status", "--checkpoint", ck, check=1)
    (line,) = error_lines(proc.stderr)
    assert "no unfinished run" in line


def test_delete_asks_then_deletes(own_runs: dict[str, Any]) -> None:
    runs = own_runs
    ck, run_id = runs["ck"], runs["crashed"]
    no = subprocess.run(
        cli_command("delete", run_id, "--checkpoint", ck), input="n\n", capture_output=True,
        text=True, timeout=CLI_TIMEOUT, check=False,
    )  # fmt: skip
    assert no.returncode != 0 and (ck / run_id).is_dir(), describe(no)
    yes = subprocess.run(
        cli_command("delete", run_id, "--checkpoint", ck), input="y\n", capture_output=True,
        text=True, timeout=CLI_TIMEOUT, check=False,
    )  # fmt: skip
    assert yes.returncode == 0 and not (ck / run_id).exists(), describe(yes)
    run_cli("delete", runs["done"], "--checkpoint", ck, "--yes", check=0)
    assert _json(run_cli("list", "--checkpoint", ck, "--json", check=0)) == []
    gone = run_cli("delete", run_id, "--checkpoint", ck, "--yes", check=1)
    assert len(error_lines(gone.stderr)) == 1


def test_cleanup_keeps_newest_finished_and_never_unfinished(source: Path, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    completed = [run_ok(*_base(source, tmp_path / "o.json", ck, "--new-run"))["run_id"]
                 for _ in range(3)]  # fmt: skip
    _crash(source, tmp_path / "crashed.json", ck)
    dry = run_cli("cleanup", "--keep", "1", "--checkpoint", ck, "--dry-run", check=0)
    assert "would remove 2" in dry.stdout and len(os.listdir(ck)) == 5  # 4 runs + .lock
    done = run_cli("cleanup", "--keep", "1", "--checkpoint", ck, check=0)
    assert sorted(done.stdout.split(":", 1)[1].split()) == sorted(completed[:2]), done.stdout
    left = _json(run_cli("list", "--checkpoint", ck, "--json", check=0))
    assert [r["status"] for r in left] == ["interrupted", "completed"]
    assert left[1]["run_id"] == completed[2]
    run_cli("cleanup", "--keep", "0", "--checkpoint", ck, check=0)
    assert [r["status"] for r in _json(run_cli("list", "--checkpoint", ck, "--json"))] == [
        "interrupted"
    ]
    assert len(error_lines(run_cli("cleanup", "--keep", "-1", check=2).stderr)) == 1


# -- a run going on in another process ---------------------------------------------------


def test_list_status_delete_while_a_run_is_going(source: Path, tmp_path: Path) -> None:
    processor = tmp_path / "gated.py"
    processor.write_text(textwrap.dedent(GATED))
    gate, started, ck = tmp_path / "gate", tmp_path / "started", tmp_path / "ck"
    env = {**os.environ, "ASYNCPROC_TEST_GATE": str(gate), "ASYNCPROC_TEST_STARTED": str(started)}
    argv = cli_command(
        *_base(source, tmp_path / "live.json", ck, "--processor", f"{processor}:work"),
        *("--batch-size", "1", "--concurrency", "2", "--workers", "1"),
    )
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: started.exists() and bool(checkpoint_files(ck)), "a commit", proc)
        run_id = _check_live(ck, proc.pid)
        watcher = subprocess.Popen(
            cli_command("status", run_id, "--checkpoint", ck, "--json", "--watch", "0.02"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert watcher.stdout is not None
        first = "".join(iter(watcher.stdout.readline, "}\n")) + "}\n"  # the first frame
        gate.touch()
        out, err = proc.communicate(timeout=CLI_TIMEOUT)
        watched = first + watcher.communicate(timeout=CLI_TIMEOUT)[0]
    finally:
        gate.touch()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["run_id"] == run_id
    final = _json(run_cli("status", run_id, "--checkpoint", ck, "--json", check=0))
    assert (final["status"], final["processed"]) == ("completed", ITEMS)
    frames = _documents(watched)
    assert watcher.returncode == 0 and len(frames) >= 2, watched
    assert frames[0]["status"] == "running" and frames[-1]["status"] == "completed"


def _documents(text: str) -> list[Any]:
    decoder, found, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        at += len(text[at:]) - len(text[at:].lstrip())
        value, at = decoder.raw_decode(text, at)
        found.append(value)
    return found


def _check_live(ck: Path, pid: int) -> str:
    status = _json(run_cli("status", "--checkpoint", ck, "--json", check=0))
    assert status["status"] == "running" and status["ended_at"] is None
    assert 1 <= status["processed"] <= 3 < ITEMS
    assert f"pid {pid} " in status["holder"]
    listed = _json(run_cli("list", "--checkpoint", ck, "--json", check=0))
    assert [(r["run_id"], r["status"]) for r in listed] == [(status["run_id"], "running")]
    refused = run_cli("delete", status["run_id"], "--checkpoint", ck, "--yes", check=1)
    (line,) = error_lines(refused.stderr)
    assert "in progress" in line and f"pid {pid} " in line
    cleaned = run_cli("cleanup", "--keep", "0", "--checkpoint", ck, check=0)
    assert "removed 0" in cleaned.stdout and (ck / status["run_id"]).is_dir()
    return str(status["run_id"])


# -- resuming with other options -----------------------------------------------------------


def test_a_file_processor_is_recorded_by_its_absolute_path(tmp_path: Path) -> None:
    """Resuming from another directory loads the same file, however it is named there."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    write_lines(home / "input.txt", numbered_lines(ITEMS))
    (home / "proc.py").write_text("def work(item):\n    return {'seen': item}\n")
    args: list[str | os.PathLike[str]] = [
            "run", "--input", tmp_path / "home" / "input.txt", "--output", tmp_path / "o.json",
            "--checkpoint", tmp_path / "ck", "--batch-size", "5", "--concurrency", "1"]  # fmt: skip
    run_cli(*args, "--processor", "proc.py:work", "--simulate-crash", "5", check=3, cwd=home)
    (run,) = _json(run_cli("list", "--checkpoint", tmp_path / "ck", "--json", check=0))
    shown = _json(run_cli("show", run["run_id"], "--checkpoint", tmp_path / "ck", "--json"))
    assert shown["options"]["processor"] == f"{home / 'proc.py'}:work"
    # The same relative spec elsewhere names another file: a different processor, refused.
    (elsewhere / "proc.py").write_text("def work(item):\n    return {'decoy': item}\n")
    refused = run_cli(*args, "--processor", "proc.py:work", cwd=elsewhere)
    assert refused.returncode not in (0, 3), describe(refused)
    (line,) = error_lines(refused.stderr)
    assert "processor" in line and str(elsewhere / "proc.py") in line, describe(refused)
    proc = run_cli(*args, "--processor", "../home/proc.py:work", check=0, cwd=elsewhere)
    summary = json.loads(proc.stdout)
    assert summary["resumed"] and summary["processed"] == ITEMS, describe(proc)
    assert b"decoy" not in (tmp_path / "o.json").read_bytes()


def test_resume_refuses_result_changing_options_and_records_speed_options(
    source: Path, tmp_path: Path
) -> None:
    ck, output = tmp_path / "ck", tmp_path / "out.json"
    _crash(source, output, ck)
    refused = run_cli(*_base(source, output, ck, "--processor", "identity", "--format", "jsonl"))
    assert refused.returncode == 1, describe(refused)
    (line,) = error_lines(refused.stderr)
    assert "processor: run has 'sleep', now 'identity'" in line
    assert "format: run has 'text', now 'jsonl'" in line
    assert "--new-run" in line

    speed = ("--concurrency", "7", "--batch-size", "9")
    summary = run_ok(
        *_base(source, output, ck, "--processor", "sleep", "--processor-arg", "latency=0.001"),
        *speed,
    )
    assert summary["resumed"] is True and summary["processed"] == ITEMS
    manifest = json.loads((ck / summary["run_id"] / "manifest.json").read_bytes())
    assert (manifest["options"]["concurrency"], manifest["options"]["batch_size"]) == (7, 9)


# -- keyed runs ------------------------------------------------------------------------------


async def _cli(*args: str | Path, check: int = 0) -> subprocess.CompletedProcess[str]:
    return await anyio.to_thread.run_sync(functools.partial(run_cli, *args, check=check))


async def test_keyed_runs_are_listed_shown_cleaned_and_deleted(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    manager = asyncproc.CheckpointManager(ck, shards=2)
    run = await manager.start_run({"source": "api"})
    pages = await run.loader("pages", interval=2)
    pages.set_total_items(10)
    for page in range(4):
        await pages.mark_processed(page)
    await pages.mark_failed("p9", ValueError("page p9 is gone"))
    await pages.save_progress()

    (live,) = _json(await _cli("list", "--checkpoint", ck, "--json"))
    assert (live["kind"], live["status"], live["input"]) == ("keyed", "running", "keyed: pages")
    assert (live["processed"], live["failed"], live["total_items"]) == (4, 1, 10)
    assert f"pid {os.getpid()} " in live["holder"]
    refused = await _cli("delete", run.run_id, "--checkpoint", ck, "--yes", check=1)
    assert "in progress" in error_lines(refused.stderr)[0]

    await run.fail(RuntimeError("the api is down"))
    shown = _json(await _cli("show", run.run_id, "--checkpoint", ck, "--json"))
    assert shown["status"] == "failed" and shown["options"]["error"].endswith("api is down")
    (failure,) = shown["recent_failures"]
    assert (failure["loader"], failure["key"], failure["error"]) == (
        "pages",
        "p9",
        "page p9 is gone",
    )

    second = await manager.start_run(new_run=True)
    await second.complete()
    cleaned = await _cli("cleanup", "--keep", "0", "--checkpoint", ck)
    # Ids made in the same second differ only by a suffix: compare whole ids.
    removed = cleaned.stdout.split(":", 1)[1].replace(",", " ").split()
    assert removed == [second.run_id], cleaned.stdout
    await _cli("delete", run.run_id, "--checkpoint", ck, "--yes")
    assert _json(await _cli("list", "--checkpoint", ck, "--json")) == []
