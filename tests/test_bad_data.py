"""Bad data and bad processors: one item fails, the run goes on; a bad setup fails early.

Each test runs the real CLI in a subprocess and checks the output and the failed-items
file byte for byte or field by field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import (
    EXIT_ITEMS_FAILED,
    describe,
    error_lines,
    expected_array,
    expected_jsonl,
    expected_text_stats_array,
    logging_processor,
    numbered_lines,
    run_cli,
    run_ok,
    text_items,
    text_stats,
    write_lines,
)
from faultkit import assert_no_traceback, json_lines, read_manifest, write_module


def _args(source: Path, output: Path, tmp_path: Path, *extra: Any) -> list[Any]:
    return ["run", "--input", source, "--output", output, "--checkpoint", tmp_path / "ck",
            *extra]  # fmt: skip


def _failed_file(output: Path) -> Path:
    return output.with_name(f"{output.stem}.failed.jsonl")


def _line_offsets(raw: bytes) -> list[int]:
    """Byte offset of each non-blank line, in order."""
    offsets, position = [], 0
    for line in raw.split(b"\n"):
        if line.strip():
            offsets.append(position)
        position += len(line) + 1
    return offsets


# -- bytes -----------------------------------------------------------------------------


def test_line_not_utf8_fails_alone(tmp_path: Path) -> None:
    lines = [line.encode() for line in numbered_lines(20)]
    lines[7] = b"bad \xff\xfe bytes here"
    raw = b"".join(line + b"\n" for line in lines)
    source = tmp_path / "input.txt"
    source.write_bytes(raw)
    output = tmp_path / "result.json"
    summary = run_ok(*_args(source, output, tmp_path, "--workers", "2"))
    assert summary["processed"] == 19 and summary["failed"] == 1, summary
    good = [(i, text_stats(line.decode())) for i, line in enumerate(lines) if i != 7]
    assert output.read_bytes() == expected_array(good)
    (dead,) = json_lines(_failed_file(output))
    assert dead["index"] == 7, dead
    assert dead["offset"] == _line_offsets(raw)[7], dead
    assert dead["error_type"] == "UnicodeDecodeError", dead
    assert isinstance(dead["item"], str) and "bytes here" in dead["item"], dead


def test_single_line_of_50_mb(tmp_path: Path) -> None:
    big = "a" * (50 * 1024 * 1024)
    source = tmp_path / "input.txt"
    source.write_bytes(b"first\n" + big.encode() + b"\nlast\n")
    output = tmp_path / "result.jsonl"
    summary = run_ok(*_args(source, output, tmp_path, "--processor", "identity", "--quiet"))
    assert summary["processed"] == 3 and summary["failed"] == 0, summary
    records = output.read_bytes().split(b"\n")
    assert records[-1] == b"" and len(records) == 4, [len(r) for r in records]
    assert len(records[1]) == len(b'{"index":1,"result":""}') + len(big), len(records[1])
    assert records[1] == b'{"index":1,"result":"' + big.encode() + b'"}'
    assert records[0] == b'{"index":0,"result":"first"}'
    assert records[2] == b'{"index":2,"result":"last"}'


def test_nul_bytes_round_trip(tmp_path: Path) -> None:
    lines = ["a\x00b", "\x00leading", "trailing\x00", "\x00", "mid \x00\x00 dle", "plain"]
    source = write_lines(tmp_path / "input.txt", lines * 50)
    output = tmp_path / "result.jsonl"
    run_ok(*_args(source, output, tmp_path, "--processor", "identity", "--workers", "2"))
    items = text_items(source.read_bytes())
    assert items[:6] == lines, "bytes.strip() keeps NUL bytes"
    assert output.read_bytes() == expected_jsonl(enumerate(items))
    decoded = [orjson.loads(line)["result"] for line in output.read_bytes().splitlines()]
    assert decoded == lines * 50


@pytest.mark.parametrize("workers", [1, 3])
def test_no_trailing_newline(workers: int, tmp_path: Path) -> None:
    source = tmp_path / "input.txt"
    source.write_bytes("\n".join(numbered_lines(1000)).encode())
    assert not source.read_bytes().endswith(b"\n")
    output = tmp_path / "result.json"
    summary = run_ok(*_args(source, output, tmp_path, "--workers", str(workers)))
    assert summary["processed"] == 1000, summary
    assert output.read_bytes() == expected_text_stats_array(source.read_bytes())


# -- results and processors that misbehave on one item ---------------------------------

ONE_BAD_PROCESSOR = """
import anyio

BAD = {bad!r}


async def work(item):
    if item == BAD:
        {misbehave}
    return {{"seen": item}}
"""


def _run_one_bad(tmp_path: Path, misbehave: str, *extra: str) -> tuple[list[str], Path, int]:
    """Run 60 items, the 11th misbehaving; return the items, the output and its index."""
    source = write_lines(tmp_path / "input.txt", numbered_lines(60))
    items = text_items(source.read_bytes())
    bad = 10
    module = write_module(
        tmp_path / "one_bad.py", ONE_BAD_PROCESSOR.format(bad=items[bad], misbehave=misbehave)
    )
    output = tmp_path / "result.json"
    summary = run_ok(*_args(source, output, tmp_path, "--processor", f"{module}:work", *extra))
    assert summary["processed"] == 59 and summary["failed"] == 1, summary
    expected = expected_array((i, {"seen": s}) for i, s in enumerate(items) if i != bad)
    assert output.read_bytes() == expected
    return items, output, bad


def _the_dead_letter(output: Path, items: list[str], bad: int) -> dict[str, Any]:
    (dead,) = json_lines(_failed_file(output))
    assert dead["index"] == bad and dead["item"] == items[bad], dead
    return dead


def test_result_not_json_encodable(tmp_path: Path) -> None:
    items, output, bad = _run_one_bad(tmp_path, "return {'not', 'json', 'encodable'}")
    dead = _the_dead_letter(output, items, bad)
    assert dead["error_type"] in ("JSONEncodeError", "TypeError"), dead


def test_hanging_item_times_out(tmp_path: Path) -> None:
    items, output, bad = _run_one_bad(
        tmp_path, "await anyio.sleep(3600)", "--timeout", "0.3", "--retries", "0"
    )
    dead = _the_dead_letter(output, items, bad)
    assert dead["error_type"] == "ItemTimeoutError", dead
    assert dead["attempts"] == 1, dead


TWO_BAD_PROCESSOR = """
import sys

SYS_EXIT, INTERRUPT = {sys_exit!r}, {interrupt!r}


{prefix}def work(item):
    if item == SYS_EXIT:
        sys.exit(7)
    if item == INTERRUPT:
        raise KeyboardInterrupt("pressed nothing")
    return {{"seen": item}}
"""


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_systemexit_and_keyboardinterrupt_are_item_failures(kind: str, tmp_path: Path) -> None:
    source = write_lines(tmp_path / "input.txt", numbered_lines(60))
    items = text_items(source.read_bytes())
    module = write_module(
        tmp_path / "two_bad.py",
        TWO_BAD_PROCESSOR.format(
            sys_exit=items[5], interrupt=items[40], prefix="async " if kind == "async" else ""
        ),
    )
    output = tmp_path / "result.json"
    proc = run_cli(*_args(source, output, tmp_path, "--processor", f"{module}:work"))
    assert_no_traceback(proc)
    assert proc.returncode == EXIT_ITEMS_FAILED, describe(proc, "one item's SystemExit must not "
                                                          "end the run")  # fmt: skip
    summary = orjson.loads(proc.stdout)
    assert summary["processed"] == 58 and summary["failed"] == 2, summary
    expected = expected_array((i, {"seen": s}) for i, s in enumerate(items) if i not in (5, 40))
    assert output.read_bytes() == expected
    dead = json_lines(_failed_file(output))
    assert [(d["index"], d["error_type"]) for d in dead] == [
        (5, "SystemExit"),
        (40, "KeyboardInterrupt"),
    ], dead
    assert all(d["attempts"] == 3 for d in dead), "the default is two retries"


# -- processors that cannot be used at all ---------------------------------------------


@pytest.mark.parametrize(
    "source_text",
    ["def work(item)\n    return item\n", "def work(a, b):\n    return a\n"],
    ids=["syntax-error", "wrong-signature"],
)
def test_unusable_processor_exit_2(source_text: str, tmp_path: Path) -> None:
    source = write_lines(tmp_path / "input.txt", numbered_lines(10))
    module = tmp_path / "broken.py"
    module.write_text(source_text, encoding="utf-8")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = run_cli(*_args(source, out_dir / "result.json", tmp_path, "--processor",
                          f"{module}:work"))  # fmt: skip
    assert_no_traceback(proc)
    assert proc.returncode == 2, describe(proc, "an unusable processor is a usage error")
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines == error_lines(proc.stderr), describe(proc)
    assert proc.stdout.strip() == "", describe(proc)
    assert list(out_dir.iterdir()) == [], "no output for an unusable processor"


# -- the failure limit -----------------------------------------------------------------

ALWAYS_FAILING = logging_processor(
    """
async def work(item):
    log_call(item)
    raise ConnectionError("the API is down")
"""
)

LIMIT_ITEMS = 2000


@pytest.mark.parametrize("limit", ["5", "10%"])
def test_max_failures_stops_early(limit: str, tmp_path: Path) -> None:
    source = write_lines(tmp_path / "input.txt", numbered_lines(LIMIT_ITEMS))
    module = write_module(tmp_path / "down.py", ALWAYS_FAILING)
    output = tmp_path / "result.json"
    args = _args(source, output, tmp_path, "--processor", f"{module}:work", "--retries", "0",
                 "--batch-size", "20", "--concurrency", "4")  # fmt: skip
    log = tmp_path / "calls.log"
    env = {"ASYNCPROC_TEST_CALL_LOG": str(log)}
    proc = run_cli(*args, "--max-failures", limit, env=env)
    assert_no_traceback(proc)
    assert proc.returncode == 1, describe(proc, "exceeding --max-failures should exit 1")
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and "--max-failures" in errors[0], describe(proc)
    assert proc.stdout.strip() == "", describe(proc)
    calls = log.read_text(encoding="utf-8").splitlines()
    assert 5 < len(calls) < LIMIT_ITEMS // 4, (
        f"{len(calls)} of {LIMIT_ITEMS} items were tried before the run stopped"
    )
    assert not output.exists()

    # The stop left a valid checkpoint: without the limit (and without the early stop for
    # runs whose first items all fail) the run finishes, every item dead-lettered exactly
    # once, in input order.
    summary = run_ok(*args, "--early-stop", "0", env=env)
    assert summary["resumed"] is True, summary
    assert summary["processed"] == 0 and summary["failed"] == LIMIT_ITEMS, summary
    assert output.read_bytes() == b"[]\n"
    dead = json_lines(_failed_file(output))
    assert [d["index"] for d in dead] == list(range(LIMIT_ITEMS))
    assert {d["error_type"] for d in dead} == {"ConnectionError"}


# -- item identity ---------------------------------------------------------------------

IDENTITY_PROCESSOR = """
import anyio

import asyncproc


async def work(item):
    await anyio.sleep(0)
    info = asyncproc.current_item()
    return {"item": item, "item_index": info.index, "item_offset": info.offset,
            "item_key": info.key}
"""


def test_current_item_identity_is_stable_across_resume(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "input.txt", numbered_lines(1500))
    raw = source.read_bytes()
    module = write_module(tmp_path / "ident.py", IDENTITY_PROCESSOR)

    def args(name: str) -> list[Any]:
        (tmp_path / name).mkdir()
        return ["run", "--input", source, "--output", tmp_path / name / "result.jsonl",
                "--checkpoint", tmp_path / name / "ck", "--processor", f"{module}:work",
                "--workers", "3", "--batch-size", "50", "--retries", "0"]  # fmt: skip

    crashed_args = args("crashed")
    run_cli(*crashed_args, "--simulate-crash", "600", check=3)
    resumed = run_ok(*crashed_args)
    assert resumed["resumed"] is True and resumed["failed"] == 0, resumed
    clean = run_ok(*args("clean"))
    assert clean["failed"] == 0, clean

    fingerprint = read_manifest(tmp_path / "clean" / "ck" / clean["run_id"]).input.fingerprint
    items, offsets = text_items(raw), _line_offsets(raw)
    by_run = {}
    for name in ("crashed", "clean"):
        records = json_lines(tmp_path / name / "result.jsonl")
        assert [r["index"] for r in records] == list(range(1500))
        assert [r["item"] for r in records] == items
        assert [r["item_index"] for r in records] == list(range(1500))
        assert [r["item_offset"] for r in records] == offsets
        assert [r["item_key"] for r in records] == [f"{fingerprint}:{o}" for o in offsets]
        by_run[name] = {r["index"]: r["item_key"] for r in records}
    assert by_run["crashed"] == by_run["clean"]
    assert (tmp_path / "crashed" / "result.jsonl").read_bytes() == (
        tmp_path / "clean" / "result.jsonl"
    ).read_bytes()
