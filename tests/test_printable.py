"""Terminal escapes from data (item errors, paths) reach the terminal shown, never obeyed."""

from __future__ import annotations

from pathlib import Path

from conftest import error_lines, numbered_lines, run_args, run_cli, write_lines
from faultkit import assert_no_traceback, refused, write_module

from asyncproc.cli.printable import printable

ESC = "\x1b]0;pwned\x07\x1b[2J"  # retitle the window, clear the screen
SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J"

HOSTILE = f"""
def work(item):
    if item.endswith("3"):
        raise ValueError({ESC!r} + "\\nsecond line \\u202e reversed \\x9b")
    return item
"""


def test_printable_escapes_controls_and_reordering_but_keeps_text() -> None:
    assert printable(ESC) == SHOWN
    assert printable("a\nb\r\tc\x7f\x9b") == "a\\x0ab\\x0d\\x09c\\x7f\\x9b"
    assert printable("ok \u202e fdp.exe") == "ok \\u202e fdp.exe"
    assert printable("naïve — 東京 [bold]x[/]") == "naïve — 東京 [bold]x[/]"


def _no_raw_controls(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text, repr(text)


def test_an_item_error_is_escaped_in_the_closing_line(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "input.txt", numbered_lines(10))
    module = write_module(tmp_path / "hostile.py", HOSTILE)
    ck = tmp_path / "ck"
    proc = run_cli(*run_args(source, tmp_path / "out.json", ck), "--processor",
                   f"{module}:work", "--quiet", check=4)  # fmt: skip
    assert_no_traceback(proc)
    _no_raw_controls(proc.stderr)
    (closing,) = [line for line in proc.stderr.splitlines() if "items failed" in line]
    assert SHOWN in closing and "\\x0asecond line \\u202e reversed \\x9b" in closing, closing


def test_show_and_list_escape_paths_and_errors(tmp_path: Path) -> None:
    source = write_lines(tmp_path / f"in{ESC}.txt", numbered_lines(10))
    module = write_module(tmp_path / "hostile.py", HOSTILE)
    ck = tmp_path / "ck"
    args = run_args(source, tmp_path / "out.json", ck)
    run_cli(*args, "--processor", f"{module}:work", "--simulate-crash", "5", "--batch-size",
            "5", check=3)  # fmt: skip
    listed = run_cli("list", "--checkpoint", ck, check=0)
    _no_raw_controls(listed.stdout + listed.stderr)
    (run_id,) = [p.name for p in ck.iterdir() if p.name.startswith("run_")]
    shown = run_cli("show", run_id, "--checkpoint", ck, check=0)
    _no_raw_controls(shown.stdout + shown.stderr)
    assert "\\x1b]0;pwned" in shown.stdout and SHOWN in shown.stdout, shown.stdout
    status = run_cli("status", "--checkpoint", ck, check=0)
    _no_raw_controls(status.stdout + status.stderr)


def test_an_error_line_escapes_the_path_it_names(tmp_path: Path) -> None:
    proc = run_cli(*run_args(tmp_path / f"missing{ESC}.txt", tmp_path / "out.json"))
    line = refused(proc, 2, "missing" + SHOWN)
    _no_raw_controls(proc.stderr)
    assert len(error_lines(proc.stderr)) == 1, line
