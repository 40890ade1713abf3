"""End-to-end tests of ``asyncproc run``: real subprocesses, real files, exact bytes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import (
    EXIT_ITEMS_FAILED,
    SUMMARY_KEYS,
    change_input,
    cli_command,
    describe,
    error_lines,
    expected_array,
    expected_jsonl,
    expected_text_stats_array,
    logging_processor,
    numbered_lines,
    run_args,
    run_cli,
    run_cmd,
    run_dirs,
    run_ok,
    summary_of,
    text_items,
    text_stats,
    write_lines,
)

RUN_ID = re.compile(r"^run_\d{8}_\d{6}(-\d+)?$")


def _same_path(reported: Any, expected: Path) -> bool:
    return isinstance(reported, str) and Path(reported).resolve() == expected.resolve()


def _write_module(path: Path, source: str) -> Path:
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


# -- the shipped sample ----------------------------------------------------------------


def test_sample_end_to_end(sample_copy: Path, tmp_path: Path) -> None:
    output = tmp_path / "x.json"
    ck = tmp_path / "ck"
    proc = run_cli(*run_args(sample_copy, output, ck), "--batch-size", "3", check=0)
    summary = summary_of(proc)  # all of stdout must be this one JSON object
    assert set(SUMMARY_KEYS) <= set(summary), sorted(set(SUMMARY_KEYS) - set(summary))
    assert summary["status"] == "completed"
    assert summary["total_items"] == 10
    assert summary["processed"] == 10
    assert summary["failed"] == 0
    assert summary["failed_items_file"] is None
    assert summary["checkpoint_cleared"] is True
    assert summary["resumed"] is False
    assert isinstance(summary["run_id"], str) and RUN_ID.match(summary["run_id"]), summary
    assert isinstance(summary["workers"], int) and summary["workers"] >= 1
    assert isinstance(summary["concurrency"], int) and summary["concurrency"] >= 1
    for key in ("elapsed_s", "items_per_s"):
        value = summary[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
        assert value >= 0, (key, value)
    assert _same_path(summary["input"], sample_copy), summary["input"]
    assert _same_path(summary["output"], output), summary["output"]

    raw = output.read_bytes()
    records = json.loads(raw)
    assert isinstance(records, list) and len(records) == 10
    items = text_items(sample_copy.read_bytes())
    assert len(items) == 10
    for index, (record, item) in enumerate(zip(records, items, strict=True)):
        assert list(record) == ["original", "length", "word_count", "uppercase", "index"]
        assert record == {**text_stats(item), "index": index}
    assert records[0]["original"] == "The quick brown fox jumps over the lazy dog"
    assert records[0]["word_count"] == 9
    assert records[8]["uppercase"].startswith("CAFÉ, NAÏVE AND 東京")
    assert raw == expected_text_stats_array(sample_copy.read_bytes())
    assert not (tmp_path / "x.failed.jsonl").exists()


def test_success_clears_checkpoint_state(sample_copy: Path, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    summary = run_ok(*run_args(sample_copy, tmp_path / "x.json", ck), "--batch-size", "3")
    assert summary["checkpoint_cleared"] is True
    leftovers = (
        [
            p
            for p in ck.rglob("*")
            if p.is_file() and (p.suffix in {".ckpt", ".out", ".dead"} or p.name.endswith(".tmp"))
        ]
        if ck.exists()
        else []
    )
    assert leftovers == [], "checkpoint_cleared is true but shard state is still on disk"


def test_rerun_after_success_reports_the_finished_run(sample_copy: Path, tmp_path: Path) -> None:
    """The same command after a success (or a kill just after it) redoes nothing."""
    args = run_args(sample_copy, tmp_path / "x.json", tmp_path / "ck")
    expected = expected_text_stats_array(sample_copy.read_bytes())
    first = run_ok(*args)
    before = (tmp_path / "x.json").stat()
    again = run_cli(*args, check=0)
    second = summary_of(again)
    assert second["run_id"] == first["run_id"] and second["resumed"] is True, second
    assert second["processed"] == 10 and second["status"] == "completed", second
    assert "already completed" in again.stderr, describe(again)
    assert (tmp_path / "x.json").stat().st_mtime_ns == before.st_mtime_ns, "output rewritten"
    # --new-run processes it again; so does a run whose output is gone.
    third = run_ok(*args, "--new-run")
    assert third["run_id"] != first["run_id"] and third["resumed"] is False, third
    (tmp_path / "x.json").unlink()
    fourth = run_ok(*args)
    assert fourth["run_id"] not in (first["run_id"], third["run_id"]), fourth
    assert fourth["resumed"] is False, fourth
    assert (tmp_path / "x.json").read_bytes() == expected


def test_run_id_gets_numbered_suffix_when_taken(sample_copy: Path, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    now = time.time()
    # Claim every plain id this run could pick, so that it must take a suffixed one.
    for delta in range(-2, 30):
        (ck / time.strftime("run_%Y%m%d_%H%M%S", time.localtime(now + delta))).mkdir()
    summary = run_ok(
        "run", "--input", sample_copy, "--output", tmp_path / "x.json", "--checkpoint", ck
    )
    run_id = summary["run_id"]
    assert re.fullmatch(r"run_\d{8}_\d{6}-[2-9]", run_id), (
        f"run id {run_id!r}: the contract says a taken id gets the suffix -2, -3, ..."
    )


def test_module_and_console_script_agree(sample_copy: Path, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "asyncproc"
    assert script.is_file(), f"console script {script} is not installed"
    out_module = tmp_path / "m" / "x.json"
    out_script = tmp_path / "s" / "x.json"
    out_module.parent.mkdir()
    out_script.parent.mkdir()
    by_module = summary_of(
        run_cmd(cli_command("run", "--input", sample_copy, "--output", out_module), check=0)
    )
    by_script = summary_of(
        run_cmd([script, "run", "--input", sample_copy, "--output", out_script], check=0)
    )
    assert by_module["processed"] == by_script["processed"] == 10
    expected = expected_text_stats_array(sample_copy.read_bytes())
    assert out_module.read_bytes() == expected
    assert out_script.read_bytes() == expected


# -- output layouts and determinism ----------------------------------------------------


def test_jsonl_output_identity(make_input: Callable[..., Path], tmp_path: Path) -> None:
    source = make_input(50)
    output = tmp_path / "out.jsonl"
    summary = run_ok(*run_args(source, output, tmp_path / "ck"), "--processor", "identity")
    assert summary["processed"] == 50
    lines = output.read_bytes().splitlines()
    assert len(lines) == 50
    items = text_items(source.read_bytes())
    for index, line in enumerate(lines):
        assert orjson.loads(line) == {"index": index, "result": items[index]}
        assert list(orjson.loads(line)) == ["index", "result"]
    assert output.read_bytes() == expected_jsonl(enumerate(items))


def test_jsonl_output_text_stats_puts_index_first(
    make_input: Callable[..., Path], tmp_path: Path
) -> None:
    source = make_input(20)
    output = tmp_path / "out.jsonl"
    run_ok("run", "--input", source, "--output", output, "--checkpoint", tmp_path / "ck")
    items = text_items(source.read_bytes())
    first = orjson.loads(output.read_bytes().splitlines()[0])
    assert list(first) == ["index", "original", "length", "word_count", "uppercase"]
    assert output.read_bytes() == expected_jsonl((i, text_stats(s)) for i, s in enumerate(items))


DETERMINISM_CONFIGS = [
    ("identity", [], "1", "1", "100"),
    ("identity", [], "8", "3", "7"),
    ("identity", [], "3", "200", "1000"),
    ("sleep", ["--processor-arg", "latency=0.001"], "1", "16", "50"),
    ("sleep", ["--processor-arg", "latency=0.001"], "8", "64", "13"),
]


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_output_identical_across_workers_concurrency_batch(
    make_input: Callable[..., Path], tmp_path: Path, suffix: str
) -> None:
    source = make_input(5000)
    items = text_items(source.read_bytes())
    if suffix == ".json":
        expected = expected_array(enumerate(items))
    else:
        expected = expected_jsonl(enumerate(items))
    for n, (processor, extra, workers, concurrency, batch) in enumerate(DETERMINISM_CONFIGS):
        output = tmp_path / f"out{n}" / f"result{suffix}"
        output.parent.mkdir()
        summary = run_ok(
            *run_args(source, output, tmp_path / f"ck{n}"),
            "--processor",
            processor,
            *extra,
            "--workers",
            workers,
            "--concurrency",
            concurrency,
            "--batch-size",
            batch,
            "--quiet",
        )
        assert summary["processed"] == 5000, (processor, workers, summary)
        assert output.read_bytes() == expected, (
            f"output differs for processor={processor} workers={workers} "
            f"concurrency={concurrency} batch={batch}"
        )


# -- crash and resume ------------------------------------------------------------------


def _crash_then_resume_args(source: Path, output: Path, ck: Path) -> list[Any]:
    return [*run_args(source, output, ck), "--workers", "2", "--batch-size", "50"]


def test_simulated_crash_then_resume(make_input: Callable[..., Path], tmp_path: Path) -> None:
    source = make_input(3000)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    output = out_dir / "result.json"
    ck = tmp_path / "ck"
    args = _crash_then_resume_args(source, output, ck)

    crashed = run_cli(*args, "--simulate-crash", "1000", check=3)
    assert "Traceback" not in crashed.stderr, describe(crashed)
    assert re.search(r"resum|same command|again", crashed.stderr, re.IGNORECASE), describe(
        crashed, "the crash message should say how to resume"
    )
    left = sorted(p.name for p in out_dir.iterdir())
    assert left in ([], [".result.json.asyncproc.lock"]), "a crash must leave no output"
    assert run_dirs(ck), f"no run directory under {ck} after the crash"

    resumed = run_ok(*args)
    assert resumed["resumed"] is True
    assert resumed["total_items"] == 3000
    assert resumed["processed"] == 3000
    assert resumed["failed"] == 0

    clean_out = tmp_path / "clean" / "result.json"
    clean_out.parent.mkdir()
    run_ok(*_crash_then_resume_args(source, clean_out, tmp_path / "ck_clean"))
    assert output.read_bytes() == clean_out.read_bytes()
    assert output.read_bytes() == expected_text_stats_array(source.read_bytes())


COUNTING_PROCESSOR = logging_processor(
    """
async def work(item):
    log_call(item)
    await anyio.sleep(0)
    return item
"""
)


def test_checkpoints_commit_batch_size_items(
    make_input: Callable[..., Path], tmp_path: Path
) -> None:
    """--batch-size N commits N items per checkpoint, so the crash lands at exactly 100."""
    source = make_input(1000)
    module = _write_module(tmp_path / "counting.py", COUNTING_PROCESSOR)
    output = tmp_path / "result.json"
    args: list[str | os.PathLike[str]] = [
            "run", "--input", source, "--output", output, "--checkpoint", tmp_path / "ck",
            "--processor", f"{module}:work", "--workers", "1", "--concurrency", "4",
            "--batch-size", "50"]  # fmt: skip
    crash_log, resume_log = tmp_path / "crash.log", tmp_path / "resume.log"
    run_cli(*args, "--simulate-crash", "100", env={"ASYNCPROC_TEST_CALL_LOG": str(crash_log)},
            check=3)  # fmt: skip
    summary = summary_of(run_cli(*args, env={"ASYNCPROC_TEST_CALL_LOG": str(resume_log)}, check=0))
    assert summary["resumed"] is True
    redo = resume_log.read_text(encoding="utf-8").splitlines()
    items = text_items(source.read_bytes())
    assert redo == items[100:] or sorted(redo) == sorted(items[100:]), (
        f"after two checkpoints of 50 items the resumed run should process items 100..999; "
        f"it processed {len(redo)} items starting near {min(redo) if redo else None!r}"
    )
    assert output.read_bytes() == expected_array(enumerate(items))


@pytest.mark.parametrize("how", ["append", "touch", "same-size-and-mtime"])
def test_resume_after_input_changed_needs_new_run(
    how: str, make_input: Callable[..., Path], tmp_path: Path
) -> None:
    source = make_input(2000)
    output = tmp_path / "result.json"
    ck = tmp_path / "ck"
    args = _crash_then_resume_args(source, output, ck)
    run_cli(*args, "--simulate-crash", "500", check=3)

    change_input(source, how)
    refused = run_cli(*args, check=1)
    assert "Traceback" not in refused.stderr, describe(refused)
    errors = error_lines(refused.stderr)
    assert len(errors) == 1, describe(refused, "expected exactly one 'asyncproc: error:' line")
    assert "--new-run" in errors[0], describe(refused)
    assert refused.stderr.strip() == errors[0], describe(refused, "stderr should be one line")
    assert refused.stdout.strip() == "", describe(refused, "no summary on a refused resume")
    assert not output.exists()

    items = 2001 if how == "append" else 2000
    fresh = run_ok(*args, "--new-run")
    assert fresh["resumed"] is False
    assert fresh["total_items"] == items
    assert fresh["processed"] == items
    assert output.read_bytes() == expected_text_stats_array(source.read_bytes())


def _newest_slot(files: list[Path]) -> Path:
    def generation(path: Path) -> tuple[int, int]:
        try:
            value = json.loads(path.read_bytes()).get("generation", -1)
        except (ValueError, AttributeError):
            value = -1
        return (value if isinstance(value, int) else -1, path.stat().st_mtime_ns)

    return max(files, key=generation)


def test_corrupt_checkpoint_of_one_shard(make_input: Callable[..., Path], tmp_path: Path) -> None:
    source = make_input(4000)
    output = tmp_path / "result.json"
    ck = tmp_path / "ck"
    args = [
        *run_args(source, output, ck),
        "--workers",
        "4",
        "--batch-size",
        "20",
        "--concurrency",
        "16",
    ]
    run_cli(*args, "--simulate-crash", "1500", check=3)
    runs = run_dirs(ck)
    assert len(runs) == 1, runs
    shards_dir = runs[0] / "units"
    slots: dict[str, list[Path]] = {}
    for path in sorted(shards_dir.glob("*.ckpt")):
        slots.setdefault(path.name.split(".")[0], []).append(path)
    assert len(slots) >= 2, f"expected several shards with checkpoints, got {sorted(slots)}"
    # The shard with two generations on disk, if any, else the first one.
    shard = next((s for s, files in slots.items() if len(files) == 2), next(iter(slots)))
    victim = _newest_slot(slots[shard])
    victim.write_bytes(b"\x00garbage, not a checkpoint\n" * 3)

    resumed = run_cli(*args, check=0)
    summary = summary_of(resumed)
    assert summary["resumed"] is True
    assert summary["processed"] == 4000
    shard_id = int(shard)
    mentions = re.search(rf"unit\D{{0,3}}0*{shard_id}\b", resumed.stderr, re.IGNORECASE)
    assert mentions or victim.name in resumed.stderr, describe(
        resumed, f"stderr should name shard {shard_id} whose checkpoint {victim.name} was bad"
    )

    clean = tmp_path / "clean.json"
    run_ok("run", "--input", source, "--output", clean, "--checkpoint", tmp_path / "ck2")
    assert output.read_bytes() == clean.read_bytes()
    assert output.read_bytes() == expected_text_stats_array(source.read_bytes())


# -- user processors -------------------------------------------------------------------

FAILING_PROCESSOR = """
import os
from pathlib import Path

LOG = Path(__file__).with_name("calls.log")


def process(item):
    fd = os.open(LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (item + "\\n").encode("utf-8"))
    finally:
        os.close(fd)
    if item == {bad!r}:
        raise ValueError("boom on " + item)
    return {{"seen": item}}
"""


def test_failing_item_goes_to_failed_file(tmp_path: Path) -> None:
    lines = numbered_lines(20)
    bad = lines[4].strip()
    source = write_lines(tmp_path / "input.txt", lines)
    module = _write_module(tmp_path / "failing.py", FAILING_PROCESSOR.format(bad=bad))
    output = tmp_path / "result.json"
    proc = run_cli(
        *run_args(source, output, tmp_path / "ck"),
        "--processor",
        f"{module}:process",
        "--retries",
        "1",
        check=EXIT_ITEMS_FAILED,
    )
    summary = summary_of(proc)
    failed_file = tmp_path / "result.failed.jsonl"
    assert summary["failed"] == 1
    assert summary["processed"] == 19
    assert summary["total_items"] == 20
    assert _same_path(summary["failed_items_file"], failed_file), summary

    dead = [orjson.loads(line) for line in failed_file.read_bytes().splitlines()]
    assert len(dead) == 1
    entry = dead[0]
    assert {"index", "offset", "item", "error_type", "error", "attempts"} <= set(entry)
    assert entry["index"] == 4
    assert entry["item"] == bad
    assert entry["error_type"] == "ValueError"
    assert "boom on" in entry["error"]
    assert entry["attempts"] == 2
    assert isinstance(entry["offset"], int) and 0 <= entry["offset"] < source.stat().st_size

    calls = (tmp_path / "calls.log").read_text(encoding="utf-8").splitlines()
    assert calls.count(bad) == 2, "one try plus --retries 1"
    assert sorted(set(calls)) == sorted(s.strip() for s in lines)
    assert len(calls) == 21

    items = [s.strip() for s in lines]
    expected = expected_array((i, {"seen": s}) for i, s in enumerate(items) if i != 4)
    assert output.read_bytes() == expected


def test_failed_file_removed_when_no_failures(sample_copy: Path, tmp_path: Path) -> None:
    stale = tmp_path / "x.failed.jsonl"
    stale.write_bytes(b'{"index":0}\n')
    summary = run_ok(*run_args(sample_copy, tmp_path / "x.json", tmp_path / "ck"))
    assert summary["failed_items_file"] is None
    assert not stale.exists(), "an old failed-items file must be removed when failed == 0"


SYNC_PROCESSOR = """
def shout(item):
    return {"shout": item.upper() + "!", "n": len(item)}
"""

ASYNC_PROCESSOR = """
import asyncio


async def pair(item):
    await asyncio.sleep(0)
    return [item, len(item.split())]
"""


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_processor_from_file(kind: str, make_input: Callable[..., Path], tmp_path: Path) -> None:
    source = make_input(300)
    items = text_items(source.read_bytes())
    if kind == "sync":
        module = _write_module(tmp_path / "sync_proc.py", SYNC_PROCESSOR)
        spec = f"{module}:shout"
        expected = expected_array(
            (i, {"shout": s.upper() + "!", "n": len(s)}) for i, s in enumerate(items)
        )
    else:
        module = _write_module(tmp_path / "async_proc.py", ASYNC_PROCESSOR)
        spec = f"{module}:pair"
        expected = expected_array((i, [s, len(s.split())]) for i, s in enumerate(items))
    output = tmp_path / "result.json"
    summary = run_ok(
        *run_args(source, output, tmp_path / "ck"), "--processor", spec, "--workers", "2"
    )
    assert summary["processed"] == 300
    assert summary["failed"] == 0
    assert output.read_bytes() == expected


def test_processor_module_function(make_input: Callable[..., Path], tmp_path: Path) -> None:
    pkg = tmp_path / "mods"
    pkg.mkdir()
    _write_module(pkg / "my_proc_mod.py", SYNC_PROCESSOR)
    source = make_input(40)
    output = tmp_path / "result.jsonl"
    run_cli(
        *run_args(source, output, tmp_path / "ck"),
        "--processor",
        "my_proc_mod:shout",
        env={"PYTHONPATH": str(pkg)},
        check=0,
    )
    items = text_items(source.read_bytes())
    assert output.read_bytes() == expected_jsonl(
        (i, {"shout": s.upper() + "!", "n": len(s)}) for i, s in enumerate(items)
    )


# -- bad options -----------------------------------------------------------------------

BadCase = Callable[[Path, Path], list[Any]]


def _bad_cases() -> dict[str, BadCase]:
    def base(t: Path, source: Path) -> list[Any]:
        return [*run_args(source, t / "out" / "result.json", t / "ck")]

    def input_dir(t: Path, source: Path) -> list[Any]:
        (t / "adir").mkdir()
        return [*run_args(t / "adir", t / "out" / "result.json", t / "ck")]

    def output_under_file(t: Path, source: Path) -> list[Any]:
        (t / "afile").write_bytes(b"a regular file\n")
        return [*run_args(source, t / "afile" / "result.json", t / "ck")]

    return {
        "batch-size-0": lambda t, s: [*base(t, s), "--batch-size", "0"],
        "workers-0": lambda t, s: [*base(t, s), "--workers", "0"],
        "concurrency-0": lambda t, s: [*base(t, s), "--concurrency", "0"],
        "concurrency-negative": lambda t, s: [*base(t, s), "--concurrency", "-1"],
        "retries-negative": lambda t, s: [*base(t, s), "--retries", "-1"],
        "batch-size-not-a-number": lambda t, s: [*base(t, s), "--batch-size", "ten"],
        "format-unknown": lambda t, s: [*base(t, s), "--format", "xml"],
        "sleep-latency-not-a-number": lambda t, s: [
            *base(t, s),
            "--processor",
            "sleep",
            "--processor-arg",
            "latency=abc",
        ],
        "missing-input": lambda t, s: [
            *run_args(t / "nope.txt", t / "out" / "result.json", t / "ck")
        ],
        "input-is-directory": input_dir,
        "unknown-processor": lambda t, s: [*base(t, s), "--processor", "nosuchprocessor"],
        "unknown-module": lambda t, s: [*base(t, s), "--processor", "nosuchmodule:fn"],
        "missing-processor-file": lambda t, s: [
            *base(t, s),
            "--processor",
            f"{t / 'nofile.py'}:fn",
        ],
        "output-parent-is-a-file": output_under_file,
    }


BAD_CASES = _bad_cases()


def _assert_usage_error(proc: subprocess.CompletedProcess[str], out_dir: Path) -> None:
    assert proc.returncode == 2, describe(proc, "expected exit code 2")
    assert "Traceback" not in proc.stderr, describe(proc)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, describe(proc, "expected exactly one line on stderr")
    assert lines[0].startswith("asyncproc: error:"), describe(proc)
    assert proc.stdout.strip() == "", describe(proc, "no summary on a usage error")
    assert list(out_dir.iterdir()) == [], f"files were left in {out_dir}"


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_option_exit_2(case: str, make_input: Callable[..., Path], tmp_path: Path) -> None:
    source = make_input(10)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = run_cli(*BAD_CASES[case](tmp_path, source))
    _assert_usage_error(proc, out_dir)


def test_bad_option_output_dir_missing(make_input: Callable[..., Path], tmp_path: Path) -> None:
    source = make_input(10)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = run_cli(*run_args(source, tmp_path / "no" / "such" / "x.json", tmp_path / "ck"))
    _assert_usage_error(proc, out_dir)
    assert not (tmp_path / "no").exists()


def test_bad_option_output_dir_read_only(make_input: Callable[..., Path], tmp_path: Path) -> None:
    source = make_input(10)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            # Root ignores permission bits: there is nothing to refuse. The test below
            # covers a place no one can write to.
            pytest.skip("privileged: a mode 0555 directory is writable")
        proc = run_cli(
            "run", "--input", source, "--output", locked / "x.json", "--checkpoint", tmp_path / "ck"
        )
        _assert_usage_error(proc, locked)
    finally:
        locked.chmod(0o755)


def test_bad_option_output_where_even_root_cannot_write(
    make_input: Callable[..., Path], tmp_path: Path
) -> None:
    """procfs takes no new files, whoever asks: the refusal must not trust permission bits."""
    source = make_input(10)
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux procfs")
    proc = run_cli(
        "run", "--input", source, "--output", "/proc/asyncproc-out.json", "--checkpoint",
        tmp_path / "ck",
    )  # fmt: skip
    assert proc.returncode == 2, describe(proc, "expected exit code 2")
    (line,) = error_lines(proc.stderr)
    assert "not writable" in line and "--output" in line, describe(proc)
    assert proc.stdout.strip() == "" and not (tmp_path / "ck").exists(), describe(proc)


def test_missing_output_option(make_input: Callable[..., Path], tmp_path: Path) -> None:
    source = make_input(10)
    proc = run_cli("run", "--input", source)
    assert proc.returncode == 2, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    assert len(error_lines(proc.stderr)) == 1, describe(proc)


# -- edge inputs -----------------------------------------------------------------------

EDGE_TEXT_INPUTS: dict[str, bytes] = {
    "empty": b"",
    "no-final-newline": b"alpha beta\ngamma\n" * 30 + b"last line without newline",
    "crlf": b"one\r\ntwo words here\r\n\r\n  three  \r\n" * 30,
    "non-ascii": "Café au lait\n東京 タワー\nemoji 🎉🚀 party\nnaïve façade\n".encode() * 30,
    "blank-and-whitespace": b"a\n\n   \n\t\nb  \n  c d\n \t \n\n" * 30,
}


@pytest.mark.parametrize("case", sorted(EDGE_TEXT_INPUTS))
def test_edge_text_inputs(case: str, tmp_path: Path) -> None:
    raw = EDGE_TEXT_INPUTS[case]
    source = tmp_path / "input.txt"
    source.write_bytes(raw)
    expected = expected_text_stats_array(raw)
    items = text_items(raw)
    outputs = []
    for workers in ("1", "4"):
        output = tmp_path / f"w{workers}" / "result.json"
        output.parent.mkdir()
        summary = run_ok(
            *run_args(source, output, tmp_path / f"ck{workers}"),
            "--workers",
            workers,
            "--batch-size",
            "7",
        )
        assert summary["total_items"] == len(items), (workers, summary)
        assert summary["processed"] == len(items), (workers, summary)
        outputs.append(output.read_bytes())
    assert outputs[0] == outputs[1], "1 and 4 workers differ"
    assert outputs[0] == expected
    records = json.loads(outputs[0])
    assert [r["original"] for r in records] == items
    if case == "empty":
        assert outputs[0] == b"[]\n"
        assert items == []
    if case == "crlf":
        assert all("\r" not in r["original"] for r in records)
        assert records[3]["original"] == "one"
    if case == "non-ascii":
        assert records[1]["original"] == "東京 タワー"
        assert records[2]["original"] == "emoji 🎉🚀 party"
        assert "東京".encode() in outputs[0], "non-ASCII must be written as UTF-8"
    if case == "no-final-newline":
        assert records[-1]["original"] == "last line without newline"
    if case == "blank-and-whitespace":
        assert items[:3] == ["a", "b", "c d"]
        assert len(records) == 90


JSONL_INPUT = (
    b'{"a": 1}\n'
    b"not json at all\n"
    b"[1, 2]\n"
    b"\n"
    b'"a string"\n'
    b"   \n"
    b'{"b": {"c": null}, "u": "\xc3\xa9"}\n'
    b"3\n"
) * 25


def test_edge_jsonl_input_with_bad_line(tmp_path: Path) -> None:
    source = tmp_path / "input.jsonl"
    source.write_bytes(JSONL_INPUT)
    lines = [line for line in JSONL_INPUT.split(b"\n") if line.strip()]
    good: list[tuple[int, Any]] = []
    bad: list[int] = []
    for index, line in enumerate(lines):
        try:
            good.append((index, orjson.loads(line)))
        except orjson.JSONDecodeError:
            bad.append(index)
    assert len(bad) == 25
    outputs = []
    for workers in ("1", "4"):
        output = tmp_path / f"w{workers}" / "result.json"
        output.parent.mkdir()
        summary = run_ok(
            *run_args(source, output, tmp_path / f"ck{workers}"),
            "--workers",
            workers,
            "--processor",
            "identity",
            "--batch-size",
            "9",
        )
        assert summary["total_items"] == len(lines)
        assert summary["processed"] == len(good)
        assert summary["failed"] == len(bad)
        failed_file = output.parent / "result.failed.jsonl"
        assert _same_path(summary["failed_items_file"], failed_file), summary
        dead = [orjson.loads(x) for x in failed_file.read_bytes().splitlines()]
        assert [d["index"] for d in dead] == bad
        # Never retried: the processor is not called for it (0) or at most once (1).
        assert all(d["attempts"] in (0, 1) for d in dead), dead[:2]
        assert all(d["error_type"] and d["error"] for d in dead), dead[:2]
        assert all("not json at all" in str(d["item"]) for d in dead)
        outputs.append((output.read_bytes(), failed_file.read_bytes()))
    assert outputs[0] == outputs[1], "1 and 4 workers differ"
    assert outputs[0][0] == expected_array(good)


def test_empty_input_jsonl_output(tmp_path: Path) -> None:
    source = tmp_path / "empty.txt"
    source.write_bytes(b"")
    output = tmp_path / "result.jsonl"
    summary = run_ok("run", "--input", source, "--output", output, "--checkpoint", tmp_path / "ck")
    assert summary["total_items"] == 0
    assert output.read_bytes() == b""


def test_input_copy_unchanged_by_run(sample_copy: Path, tmp_path: Path) -> None:
    before = sample_copy.read_bytes()
    run_ok(*run_args(sample_copy, tmp_path / "x.json", tmp_path / "ck"))
    assert sample_copy.read_bytes() == before
