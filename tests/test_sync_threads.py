"""A plain ``def`` processor runs in as many threads as ``--concurrency`` (or ``--threads``).

anyio's default thread limiter would cap it at 40. The processor counts the calls
running at once (a counter under a lock) and returns that count with each result; the
first PARTIES calls wait on a ``threading.Barrier`` of PARTIES, with a timeout, so the
run can only finish without failures if that many calls really ran at once.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import orjson
import pytest
from conftest import numbered_lines, run_ok, write_lines

ITEMS = 300

PROCESSOR = """
import os
import threading
import time

PARTIES = int(os.environ["ASYNCPROC_TEST_PARTIES"])
BARRIER = threading.Barrier(PARTIES, timeout=10)
LOCK = threading.Lock()
running = started = 0


def work(item):
    global running, started
    with LOCK:
        running += 1
        started += 1
        first, now = started <= PARTIES, running
    try:
        if first:
            BARRIER.wait()  # raises BrokenBarrierError if PARTIES never run at once
        time.sleep(0.002)
        return {"item": item, "running": now}
    finally:
        with LOCK:
            running -= 1
"""


@pytest.mark.parametrize(
    ("threads", "parties"),
    [(None, 100), (8, 8)],
    ids=["threads_default_to_concurrency", "threads_option_caps"],
)
def test_sync_processor_threads(threads: int | None, parties: int, tmp_path: Path) -> None:
    source = write_lines(tmp_path / "input.txt", numbered_lines(ITEMS))
    processor = tmp_path / "blocking.py"
    processor.write_text(textwrap.dedent(PROCESSOR), encoding="utf-8")
    output = tmp_path / "out.jsonl"
    extra = ["--threads", str(threads)] if threads is not None else []
    summary = run_ok(
        "run", "--input", source, "--output", output, "--checkpoint", tmp_path / "ck",
        "--processor", f"{processor}:work", "--workers", "1", "--concurrency", "100",
        "--retries", "0", "-q", *extra,
        env={"ASYNCPROC_TEST_PARTIES": str(parties)},
    )  # fmt: skip
    assert summary["failed"] == 0, (
        f"fewer than {parties} calls ever ran at once (the barrier timed out): {summary}"
    )
    peak = max(orjson.loads(line)["running"] for line in output.read_bytes().splitlines())
    assert peak == parties, f"expected at most {parties} calls at once, saw {peak}"
