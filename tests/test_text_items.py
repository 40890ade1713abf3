"""The older text tool's items, end to end: every line end ``str.splitlines()`` knows,
Unicode blanks, a byte-order mark skipped, UTF-16 and UTF-32 refused before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import error_lines, expected_text_stats_array, run_args, run_cli, run_ok, text_items

# Every kind of line end and blank, several times over, so units and batches cut them.
RARE = (
    "form\x0cfeed\x0bvtab\x1cfs\x1dgs\x1ers\rlone cr\r\ncrlf\n"
    "nel\x85ls\u2028ps\u2029end\n\xa0\u3000\u2003\n  \x1f  \n café \xa0\n"
).encode()


def test_rare_line_ends_and_unicode_blanks_are_the_older_tools_items(tmp_path: Path) -> None:
    raw = b"\xef\xbb\xbf" + RARE * 40
    source = tmp_path / "input.txt"
    source.write_bytes(raw)
    items = text_items(raw)
    assert items[:14] == ["form", "feed", "vtab", "fs", "gs", "rs", "lone cr", "crlf", "nel",
                          "ls", "ps", "end", "café", "form"]  # fmt: skip
    outputs = []
    for workers in ("1", "3"):
        output = tmp_path / f"w{workers}.json"
        summary = run_ok(
            *run_args(source, output, tmp_path / f"ck{workers}"), "--workers", workers,
            "--batch-size", "7",
        )  # fmt: skip
        assert summary["total_items"] == summary["processed"] == len(items), summary
        outputs.append(output.read_bytes())
    assert outputs[0] == outputs[1] == expected_text_stats_array(raw)
    assert [r["original"] for r in json.loads(outputs[0])] == items


@pytest.mark.parametrize(
    ("head", "what"),
    [
        ("\ufeffhello\nworld\n".encode("utf-16-le"), "UTF-16"),
        ("hello\nworld\n".encode("utf-16-be"), "UTF-16 or UTF-32"),
        ("\ufeffhello\n".encode("utf-32-le"), "UTF-32"),
    ],
)
def test_utf16_and_utf32_are_refused_with_one_line(head: bytes, what: str, tmp_path: Path) -> None:
    source = tmp_path / "input.txt"
    source.write_bytes(head * 20)
    proc = run_cli(*run_args(source, tmp_path / "out.json", tmp_path / "ck"), check=2)
    (line,) = error_lines(proc.stderr)
    assert f"looks like {what}" in line and "convert it first" in line, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out.json").exists()
