"""The README's run-management and Python API examples run as written."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    CLI_TIMEOUT,
    REPO,
    SAMPLE_INPUT,
    expected_jsonl,
    expected_text_stats_array,
    numbered_lines,
    text_items,
    write_lines,
)

FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(heading: str, language: str) -> list[str]:
    """The fenced ``language`` blocks of the README section under ``## heading``."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end >= 0 else len(text)]
    return [body for lang, body in FENCE.findall(section) if lang == language]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    shutil.copy(SAMPLE_INPUT, tmp_path / "data" / "sample_input.txt")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "asyncproc"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m asyncproc "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    (bin_dir / "python").symlink_to(sys.executable)
    return tmp_path


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{cwd / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False
    )


def test_run_management_example(workdir: Path) -> None:
    (script,) = blocks("Run management", "bash")
    proc = _run(["bash", "-euo", "pipefail", "-c", script], workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "interrupted" in proc.stdout and '"status": "interrupted"' in proc.stdout
    # One run, crashed and then resumed to completion: cleanup --keep 1 keeps it.
    assert "removed 0 run(s)" in proc.stdout, proc.stdout
    assert (workdir / "out.json").is_file()


# Runs the coroutine the "Files" example defines; the example itself only defines it.
RUN_MAIN = """

import asyncio

asyncio.run(main())
"""


def test_python_api_examples(workdir: Path) -> None:
    files, keyed, manual = blocks("Python API", "python")
    assert "async def main() -> None:" in files and "process_file(" in files, files
    items = numbered_lines(300)
    write_lines(workdir / "in.txt", items)  # the input the process_file example names
    outputs = []
    for number, source in enumerate((files + RUN_MAIN, keyed, manual)):
        path = workdir / f"example_{number}.py"
        path.write_text(source, encoding="utf-8")
        proc = _run([sys.executable, str(path)], workdir)
        assert proc.returncode == 0, f"example {number}:\n{source}\n{proc.stderr}"
        outputs.append(proc.stdout)
    assert outputs[0].split() == ["10", "None"]
    assert "ItemsReport(succeeded=99, failed=1, skipped=0)" in outputs[1]
    assert "39 40 97.5 1" in outputs[2] and "page 7 timed out" in outputs[2]

    # run_file: the default processor's records of the sample, checkpoints under ck/.
    sample = SAMPLE_INPUT.read_bytes()
    assert (workdir / "out.json").read_bytes() == expected_text_stats_array(sample)
    assert [r["status"] for r in _runs(workdir, "ck")] == ["completed"]
    # process_file with a callable: each item shouted, one JSON line per item, in order;
    # its run lives in the default checkpoint directory, .asyncproc beside the output.
    shouted = ((i, s.upper()) for i, s in enumerate(text_items((workdir / "in.txt").read_bytes())))
    assert (workdir / "out.jsonl").read_bytes() == expected_jsonl(shouted)
    (run,) = _runs(workdir, ".asyncproc")
    assert (run["status"], run["processed"], run["failed"]) == ("completed", len(items), 0), run


def _runs(workdir: Path, checkpoint: str) -> list[dict[str, Any]]:
    proc = _run(["asyncproc", "list", "--json", "--checkpoint", checkpoint], workdir)
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout)
    assert isinstance(runs, list)
    return runs


def test_moving_from_the_older_tools_example(workdir: Path) -> None:
    """The older loader tool's usage, with only the import line from asyncproc.compat."""
    (source,) = blocks("Moving from the older tools", "python")
    assert source.startswith("from asyncproc.compat import ")
    path = workdir / "older_loader.py"
    path.write_text(source, encoding="utf-8")
    proc = _run([sys.executable, str(path)], workdir)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "99 1 99.0" in lines, lines  # among the older tool's own lines, as it printed them
    for said in (
        "Started new run: ",
        "Progress: 25/100 (25.0%)",
        "Failed to process item z-13: malformed zaak",
        "Final Progress for load_zaken: 99/100 (99.0%)",
        " completed successfully",
    ):
        assert any(said in line for line in lines), (said, lines)  # fmt: skip
    (run,) = _runs(workdir, "checkpoints")
    assert (run["status"], run["description"], run["processed"]) == (
        "completed",
        "Nightly load",
        99,
    )


STORY = "Your own processor: run it, kill it, resume it, retry the failures"
EXIT_COMMENT = re.compile(r"#\s*exit (\d+)")


def _story_commands(block: str) -> list[tuple[str, int]]:
    """Each command line of a story block with the exit code its comment promises."""
    commands = []
    for line in block.splitlines():
        command, _, comment = line.partition("  # ")
        promised = EXIT_COMMENT.search("# " + comment)
        commands.append((command, int(promised.group(1)) if promised else 0))
    return commands


def _run_story_block(block: str, cwd: Path) -> None:
    for command, promised in _story_commands(block):
        proc = _run(["bash", "-c", command], cwd)
        assert proc.returncode == promised, f"{command}\n{proc.stdout}{proc.stderr}"


def _fixed(source: str) -> str:
    """The processor with its two `if` lines deleted, as the README tells the reader."""
    lines = source.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("if "))
    return "".join(lines[:at] + lines[at + 2 :])


def _story_expected(cwd: Path) -> bytes:
    items = text_items((cwd / "data" / "sample_input.txt").read_bytes())
    return expected_jsonl((i, {"line": s, "shout": s.upper()}) for i, s in enumerate(items))


def test_your_own_processor_story(workdir: Path) -> None:
    """The newcomer's story runs as written: crash, resume with one failure, fix, retry."""
    (source,) = blocks(STORY, "python")
    crash_and_resume, retry = blocks(STORY, "bash")
    (workdir / "shout.py").write_text(source)
    _run_story_block(crash_and_resume, workdir)
    failed = (workdir / "shouts.failed.jsonl").read_text().splitlines()
    assert len(failed) == 1 and "mentions a crash" in failed[0], failed
    expected = _story_expected(workdir)
    partial = (workdir / "shouts.jsonl").read_bytes().splitlines(keepends=True)
    assert partial == [r for r in expected.splitlines(keepends=True) if b"CRASH" not in r]
    (workdir / "shout.py").write_text(_fixed(source))
    _run_story_block(retry, workdir)
    assert (workdir / "shouts.jsonl").read_bytes() == expected
    assert not (workdir / "shouts.failed.jsonl").exists()


GITHUB_SLUG_DROPS = re.compile(r"[^\w\- ]")


def _slug(heading: str) -> str:
    return GITHUB_SLUG_DROPS.sub("", heading.strip().lower()).replace(" ", "-")


def test_contents_links_name_real_headings() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    headings = {_slug(h) for h in re.findall(r"^#{2,3} (.+)$", text, re.MULTILINE)}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links and sorted(set(links) - headings) == []
    assert text.index(f"## {STORY}") < len("\n".join(text.splitlines()[:150]))
