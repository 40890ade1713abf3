"""Values pass through exactly or fail their item; whatever goes wrong with an item stays
with that item.

Big integers, NaN, a result with its own ``index`` key, a dead letter that cannot itself
be written as JSON, and processors that raise every kind of ``BaseException``: each run
is the real CLI in a subprocess, and each must end with exit 0, the good items exact in
the output and each bad item alone in the failed-items file with a clear error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import describe, run_cli, summary_of
from faultkit import assert_no_traceback, json_lines, write_module

from asyncproc.engine import exact

MISBEHAVING = """
import asyncio
import math
import os


class Custom(BaseException):
    pass


def behave(item):
    kind = item.get("kind") if isinstance(item, dict) else None
    if kind == "nan":
        return {"v": math.nan}
    if kind == "inf":
        return [1.0, -math.inf]
    if kind == "custom":
        raise Custom("a BaseException of its own")
    if kind == "genexit":
        raise GeneratorExit("closed")
    if kind == "cancelled":
        raise asyncio.CancelledError("a cancellation of its own")
    if kind == "stop":
        raise StopIteration("nothing left")
    if kind == "deep":
        return item["deep"]
    if kind == "index":
        return {"index": "its own", "v": item["v"]}
    if kind == "flaky" and os.environ.get("FLAKY") == "1":
        raise ValueError("flaky")
    return item


async def work_async(item):
    return behave(item)


def work_sync(item):
    return behave(item)
"""

BIG = 123456789012345678901234567890
DEEP = 300  # deeper than orjson writes (254): the result and its dead letter both fail

GOOD: list[Any] = [
    {"kind": "big", "n": BIG, "neg": -99999999999999999999, "fits": 18446744073709551615},
    [-9999999999999999999, 1.5, "12345678901234567890 in text"],
    {"kind": "plain", "text": "no long numbers", "x": 0.1},
    {"kind": "index", "v": 7},
    {"kind": "flaky", "v": 8},
]
BAD_ASYNC = {  # kind -> the error type its dead letter must carry
    "nan": "NotExactError",
    "inf": "NotExactError",
    "custom": "Custom",
    "genexit": "GeneratorExit",
    "cancelled": "CancelledError",
    "stop": "RuntimeError",  # Python's rule for a coroutine raising StopIteration, kept for a def
    "deep": "TypeError",  # orjson.JSONEncodeError is TypeError itself
}


def _deep() -> Any:
    value: Any = "bottom"
    for _ in range(DEEP):
        value = [value]
    return value


def _input(tmp_path: Path) -> tuple[Path, list[Any]]:
    bad = [{"kind": k, "deep": _deep()} if k == "deep" else {"kind": k} for k in BAD_ASYNC]
    items = [*GOOD[:2], *bad, *GOOD[2:]]
    lines = [json.dumps(item).encode() for item in items]  # the stdlib writes big ints exactly
    source = tmp_path / "items.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    return source, items


def _expected(items: list[Any], bad: set[int], output: str) -> bytes:
    """The output a correct run writes, built with the standard library (exact ints)."""
    records = []
    for index, item in enumerate(items):
        if index in bad:
            continue
        own = isinstance(item, dict) and item.get("kind") == "index"
        result = {"index": "its own", "v": item["v"]} if own else item
        flat = isinstance(result, dict) and "index" not in result
        if output == "jsonl":
            body = {"index": index, **result} if flat else {"index": index, "result": result}
        else:
            body = {**result, "index": index} if flat else {"result": result, "index": index}
        records.append(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())
    if output == "jsonl":
        return b"".join(r + b"\n" for r in records)
    return b"[\n  " + b",\n  ".join(records) + b"\n]\n"


def _run(
    where: Path, source: Path, fn: str, output: str, *extra: str, flaky: bool = False
) -> dict[str, Any]:
    """Run the misbehaving processor from ``where`` (its output, checkpoint and module)."""
    where.mkdir(exist_ok=True)
    module = write_module(where / "misbehaving.py", MISBEHAVING)
    proc = run_cli(
        "run", "--input", source, "--output", where / f"out.{output}",
        "--checkpoint", where / "ck", "--processor", f"{module}:{fn}", "--retries", "0",
        "--quiet", *extra, env={"FLAKY": "1" if flaky else "0"},
    )  # fmt: skip
    assert_no_traceback(proc)
    summary = summary_of(proc)
    finished = 4 if summary["failed"] else 0  # 4: the run finished, with failed items
    assert proc.returncode == finished, describe(proc, "one item's trouble must not stop the run")
    return summary


@pytest.mark.parametrize(("fn", "output"), [("work_async", "jsonl"), ("work_sync", "json")])
def test_every_kind_of_trouble_stays_with_its_item(fn: str, output: str, tmp_path: Path) -> None:
    source, items = _input(tmp_path)
    summary = _run(tmp_path, source, fn, output)
    bad = set(range(2, 2 + len(BAD_ASYNC)))
    assert (summary["processed"], summary["failed"]) == (len(items) - len(bad), len(bad)), summary
    out = (tmp_path / f"out.{output}").read_bytes()
    assert out == _expected(items, bad, output)
    assert str(BIG).encode() in out and b"-99999999999999999999" in out

    letters = {d["index"]: d for d in json_lines(tmp_path / "out.failed.jsonl")}
    assert sorted(letters) == sorted(bad)
    for index, kind in zip(sorted(bad), BAD_ASYNC, strict=True):
        letter = letters[index]
        assert letter["error_type"] == BAD_ASYNC[kind], letter
        assert letter["offset"] >= 0 and letter["attempts"] == 1, letter
    assert "NaN" in letters[2]["error"] and "['v']" in letters[2]["error"], letters[2]
    deep = letters[2 + list(BAD_ASYNC).index("deep")]
    assert "kept as text" in deep["error"] and isinstance(deep["item"], str), deep
    assert deep["item"].startswith("{'kind': 'deep', 'deep': [[[["), deep["item"][:40]


def test_a_result_with_its_own_index_survives_retry_failed(tmp_path: Path) -> None:
    source, items = _input(tmp_path)
    clean = _run(tmp_path / "clean", source, "work_async", "json")
    assert clean["failed"] == len(BAD_ASYNC), clean
    expected = (tmp_path / "clean" / "out.json").read_bytes()
    records = orjson.loads(expected)
    assert {"result": {"index": "its own", "v": 7}, "index": len(items) - 2} in records

    # The flaky item fails on the first pass, then succeeds on --retry-failed, and is
    # spliced in by the engine's index, not by the result's own.
    first = _run(tmp_path / "flaky", source, "work_async", "json", flaky=True)
    assert first["failed"] == len(BAD_ASYNC) + 1, first
    again = _run(tmp_path / "flaky", source, "work_async", "json", "--retry-failed")
    assert again["failed"] == len(BAD_ASYNC), again
    assert (tmp_path / "flaky" / "out.json").read_bytes() == expected


# -- the exact codec itself ------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        b"123456789012345678901234567890",
        b"-9999999999999999999",
        b'{"a": [1, 2, 340282366920938463463374607431768211456], "b": "x"}',
        b'{"k": 18446744073709551615, "s": "12345678901234567890123"}',
    ],
)
def test_big_integers_round_trip_exactly(text: bytes) -> None:
    value = exact.loads(text)
    assert value == json.loads(text)
    assert exact.dumps(value) == json.dumps(value, separators=(",", ":")).encode()


@pytest.mark.parametrize("text", [b"NaN", b"[Infinity]", b"1e400", b"[-1e999]"])
def test_non_finite_numbers_are_refused_when_read(text: bytes) -> None:
    with pytest.raises(ValueError):  # orjson's JSONDecodeError is a ValueError too
        exact.loads(text)
    if text.startswith(b"["):  # the exact parser, taken for a line with a long number
        with pytest.raises(ValueError):
            exact.loads(text.replace(b"]", b", 12345678901234567890]"))


def test_placeholder_text_cannot_forge_a_number() -> None:
    value = {"big": 2**80, "text": "plain"}
    assert exact.dumps(value) == b'{"big":1208925819614629174706176,"text":"plain"}'
