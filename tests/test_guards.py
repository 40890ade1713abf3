"""Nothing lost: inputs and outputs that a careless user (or a second run) could destroy.

Each test runs the real CLI in a subprocess on real files: an input that is the output's
failed-items file, a pipe, two runs on one output, an output's permissions, a disk that
fills up mid-merge, and ``--resume`` with another input or output.
"""

from __future__ import annotations

import os
import resource
import signal
import stat
import subprocess
from pathlib import Path
from typing import Any

from conftest import (
    another_group,
    cli_command,
    describe,
    expected_array,
    expected_text_stats_array,
    numbered_lines,
    run_cli,
    run_ok,
    text_items,
    wait_until,
    write_lines,
)
from faultkit import refused, write_module

GATED = """
import os
from pathlib import Path

import anyio

STARTED = os.environ.get("ASYNCPROC_TEST_STARTED")
GATE = os.environ.get("ASYNCPROC_TEST_GATE")


async def work(item):
    if STARTED:
        Path(STARTED).touch()
    while GATE and not os.path.exists(GATE):
        await anyio.sleep(0.01)
    return {"item": item}
"""


def test_input_that_is_the_failed_items_file_isrefused(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "res.failed.jsonl", ['{"a": 1}', '{"a": 2}'])
    before = source.read_bytes()
    for output in (tmp_path / "res.jsonl", tmp_path / "res.json"):
        proc = run_cli("run", "--input", source, "--output", output, "--checkpoint",
                       tmp_path / "ck", "--processor", "identity")  # fmt: skip
        refused(proc, 2, "failed items", "--output")
        assert source.read_bytes() == before and not output.exists()
    # Another name for the same file (a hard link) is the same file.
    os.link(source, tmp_path / "alias.jsonl")
    proc = run_cli("run", "--input", tmp_path / "alias.jsonl", "--output",
                   tmp_path / "res.jsonl", "--checkpoint", tmp_path / "ck")  # fmt: skip
    refused(proc, 2, "failed items")
    assert source.read_bytes() == before


def test_pipes_are_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "input.fifo"
    os.mkfifo(fifo)
    proc = run_cli("run", "--input", fifo, "--output", tmp_path / "o.json", "--checkpoint",
                   tmp_path / "ck")  # fmt: skip
    refused(proc, 2, "pipe", "save it to a file")
    piped = subprocess.run(
        cli_command("run", "--input", "/dev/stdin", "--output", tmp_path / "o.json",
                    "--checkpoint", tmp_path / "ck"),
        input="one\ntwo\n", capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    refused(piped, 2, "pipe", "save it to a file")
    assert not (tmp_path / "o.json").exists() and not (tmp_path / "ck").exists()


def test_pseudo_files_are_refused_not_read_as_empty(tmp_path: Path) -> None:
    """/proc/cpuinfo stats as 0 bytes but is not empty: an empty output, exit 0, was wrong."""
    cpuinfo = Path("/proc/cpuinfo")
    assert cpuinfo.stat().st_size == 0 and cpuinfo.read_bytes(), "no pseudo-file to try"
    proc = run_cli("run", "--input", cpuinfo, "--output", tmp_path / "o.jsonl", "--checkpoint",
                   tmp_path / "ck")  # fmt: skip
    refused(proc, 2, "/proc/cpuinfo", "pseudo-file", "copy it to a regular file")
    assert not (tmp_path / "o.jsonl").exists()


def _started(args: list[Any], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL, text=True, env={**os.environ, **env},
    )  # fmt: skip


def test_one_output_is_held_for_the_whole_run(tmp_path: Path) -> None:
    """Two runs of different inputs into one output, each with its own checkpoint
    directory: the second is refused while the first works; the first's output stands."""
    module = write_module(tmp_path / "gated.py", GATED)
    first_input = write_lines(tmp_path / "first.txt", numbered_lines(50))
    second_input = write_lines(tmp_path / "second.txt", numbered_lines(80))
    output = tmp_path / "shared.json"
    started, gate = tmp_path / "started", tmp_path / "gate"

    def args(source: Path, ck: str) -> list[Any]:
        return ["run", "--input", source, "--output", output, "--checkpoint", tmp_path / ck,
                "--processor", f"{module}:work", "--quiet"]  # fmt: skip

    first = _started(
        args(first_input, "ck1"),
        {"ASYNCPROC_TEST_STARTED": str(started), "ASYNCPROC_TEST_GATE": str(gate)},
    )
    try:
        wait_until(started.exists, "the first run's first item", first)
        second = run_cli(*args(second_input, "ck2"))
        line = refused(second, 1, str(output), f"pid {first.pid}")
        assert "in progress" in line, line
    finally:
        gate.touch()
        _, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    items = text_items(first_input.read_bytes())
    assert output.read_bytes() == expected_array((i, {"item": s}) for i, s in enumerate(items))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # Once the first is done, the second may run.
    run_ok(*args(second_input, "ck2"))


def test_an_existing_output_keeps_its_permissions(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "input.txt", numbered_lines(30))
    output = tmp_path / "result.json"
    output.write_bytes(b"old\n")
    output.chmod(0o640)
    group = another_group()
    os.chown(output, -1, group)
    run_ok("run", "--input", source, "--output", output, "--checkpoint", tmp_path / "ck")
    st = output.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == group, oct(st.st_mode)
    assert output.read_bytes() == expected_text_stats_array(source.read_bytes())
    fresh = tmp_path / "fresh.json"
    run_ok("run", "--input", source, "--output", fresh, "--checkpoint", tmp_path / "ck2")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _limited(limit: int) -> None:
    """In the child: files may not grow past ``limit`` bytes (EFBIG, as a full disk)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def _run_limited(args: list[Any], limit: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(*args), capture_output=True, text=True, timeout=60, check=False,
        stdin=subprocess.DEVNULL, preexec_fn=lambda: _limited(limit),
    )  # fmt: skip


def test_a_full_disk_names_the_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "input.txt", numbered_lines(3000))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    output = out_dir / "result.json"
    ck = tmp_path / "ck"
    args: list[Any] = ["run", "--input", source, "--output", output, "--checkpoint", ck,
                       "--workers", "4", "--batch-size", "100", "--quiet"]  # fmt: skip
    clean = expected_text_stats_array(source.read_bytes())

    # Too small for a segment: the run stops at a commit, naming the segment.
    early = _run_limited(args, 4096)
    line = refused(early, 1, "File too large", str(ck))
    assert "/segments/" in line, line
    assert sorted(os.listdir(out_dir)) == []

    # Room for every segment, not for the merged output: the merge names the output,
    # and its partly written temporary file is gone.
    late = _run_limited(args, len(clean) * 2 // 3)
    refused(late, 1, "File too large", str(output))
    assert sorted(os.listdir(out_dir)) == [], "a partial temporary file was left"

    summary = run_ok(*args)
    assert summary["resumed"] is True, summary
    assert output.read_bytes() == clean


def test_resume_names_a_run_of_this_input_and_output_only(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "input.txt", numbered_lines(40))
    other = write_lines(tmp_path / "other.txt", numbered_lines(60))
    ck = tmp_path / "ck"
    crashed = run_cli("run", "--input", source, "--output", tmp_path / "a.json", "--checkpoint",
                      ck, "--batch-size", "5", "--simulate-crash", "10")  # fmt: skip
    assert crashed.returncode == 3, describe(crashed)
    (run_id,) = [p.name for p in ck.iterdir() if p.name.startswith("run_")]
    for inp, out in ((other, tmp_path / "a.json"), (source, tmp_path / "b.json")):
        proc = run_cli("run", "--input", inp, "--output", out, "--checkpoint", ck,
                       "--resume", run_id)  # fmt: skip
        refused(proc, 1, run_id, "--resume")
        assert not (tmp_path / "b.json").exists()
    summary = run_ok("run", "--input", source, "--output", tmp_path / "a.json", "--checkpoint",
                     ck, "--resume", run_id)  # fmt: skip
    assert summary["run_id"] == run_id and summary["resumed"] is True, summary
    assert (tmp_path / "a.json").read_bytes() == expected_text_stats_array(source.read_bytes())
