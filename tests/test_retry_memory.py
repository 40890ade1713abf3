"""A retry's memory is bounded by its window, not by the number of failed items.

In process, a spy holds the retry's first commit and counts processor calls: lanes must
stop exactly one window past the last durable commit (none yet: the start), and the
feeder's queue must stay under its low-water mark plus one block. In a subprocess, the
peak RSS of a retry of 50,000 failed items must be close to that of a retry of 5,000
(the retry that kept every item and outcome in memory took 530 MB against 83 MB).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import anyio.lowlevel
import orjson
import pytest
from conftest import CLI_TIMEOUT, EXIT_ITEMS_FAILED, cli_command, run_cli, summary_of

from asyncproc.engine.lanes import FEED_LOW_WATER
from asyncproc.engine.pipeline import Pipeline
from asyncproc.engine.replay.run import BLOCK_ITEMS, LetterReader, RetryRun
from asyncproc.engine.replay.state import UNIT
from asyncproc.engine.unit import window
from asyncproc.engine.units import first_checkpoint
from asyncproc.processors.loading import load_processor
from asyncproc.storage.memory import MemoryStorage
from asyncproc.storage.records import DeadLetter, UnitCheckpoint
from asyncproc.storage.subfolder import Subfolder
from asyncproc.storage.unitstore import UnitStore

LETTERS = 20_000
BATCH = 100
LANES = 8


def _input_and_letters(tmp_path: Path, n: int) -> tuple[Path, Path]:
    """An input of ``n`` lines and a failed-items file naming every one of them."""
    source, failed = tmp_path / "input.txt", tmp_path / "out.failed.jsonl"
    lines = [f"item {i:06d}\n".encode() for i in range(n)]
    source.write_bytes(b"".join(lines))
    offsets = [0]
    for line in lines[:-1]:
        offsets.append(offsets[-1] + len(line))
    letters = (DeadLetter(i, offsets[i], f"item {i:06d}", "ValueError", "down", 1).to_line()
               for i in range(n))  # fmt: skip
    failed.write_bytes(b"".join(letters))
    return source, failed


class HeldStore(UnitStore):
    """Holds its first commit until the lanes have run as far as the window lets them.

    Then, on the run's event loop, it waits until every task is blocked while items are
    queued and the feeder rests (it waits for room only above its low-water mark): a
    lane that could run past the window would be runnable, so the calls counted then
    are all the lanes will make while the commit is held. No sleep proves the negative.
    """

    def __init__(self, storage: MemoryStorage, calls: list[int], limit: int) -> None:
        super().__init__(Subfolder(storage, "retry/"), UNIT.unit_id)
        self.calls, self.limit = calls, limit
        self.first_cut: int | None = None
        self.calls_while_held = -1
        self.queued_while_held = -1
        self.retry: RetryRun | None = None

    def commit(self, data: dict[str, bytes], checkpoint: UnitCheckpoint) -> UnitCheckpoint:
        if self.first_cut is None:
            self.first_cut = checkpoint.next_index
            anyio.from_thread.run(self._settled)
        return super().commit(data, checkpoint)

    async def _settled(self) -> None:
        retry = self.retry
        assert retry is not None and self.first_cut is not None
        with anyio.fail_after(30):
            while True:
                await anyio.wait_all_tasks_blocked()
                reached = self.calls[0] >= self.limit  # nothing durable yet: from 0
                if reached and len(retry.lines) > FEED_LOW_WATER:
                    break  # everyone blocked, with work queued and the feeder resting
                await anyio.sleep(0.001)  # the feeder reads in a thread, or lanes still run
        self.calls_while_held, self.queued_while_held = self.calls[0], len(retry.lines)


def test_lanes_stop_one_window_past_a_held_commit(tmp_path: Path) -> None:
    source, failed = _input_and_letters(tmp_path, LETTERS)
    calls = [0]

    async def work(item: str) -> str:
        calls[0] += 1
        await anyio.lowlevel.checkpoint()
        return item

    pipeline = Pipeline(load_processor(work), format="text", output_kind="jsonl", retries=0,
                        timeout=None, threads=LANES)  # fmt: skip
    store = HeldStore(MemoryStorage(), calls, window(LANES, BATCH))
    start = first_checkpoint("run_test", UNIT)
    size = failed.stat().st_size
    reader = LetterReader(failed, 0, size, source, source.stat().st_size)
    retry = RetryRun(reader, start, size, store, pipeline, lanes=LANES, batch_size=BATCH,
                     commit_interval=60, fingerprint="f")  # fmt: skip
    store.retry = retry
    try:
        final = anyio.run(retry.run)
    finally:
        reader.close()

    assert store.first_cut is not None and store.first_cut >= BATCH
    assert store.queued_while_held > FEED_LOW_WATER, "the lanes had items left to take"
    assert store.calls_while_held == retry.limit, (
        "lanes did not stop one window past the last durable commit (the start)"
    )
    assert retry.peak == retry.limit < LETTERS // 2, (retry.peak, retry.limit)
    assert retry.peak_queue <= FEED_LOW_WATER + BLOCK_ITEMS, retry.peak_queue
    assert calls[0] == LETTERS and (final.processed, final.failed) == (LETTERS, 0)
    assert final.offset == size
    committed = b"".join(
        b"".join(store.read_committed(ref)) for ref in final.segments
    )  # fmt: skip
    expected = [{"index": i, "result": f"item {i:06d}"} for i in range(LETTERS)]
    assert [orjson.loads(line) for line in committed.splitlines()] == expected


# -- peak RSS of a real retry ----------------------------------------------------------

PEAK_RSS = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, timeout=float(%r))
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""

FAILING = """
import os


async def fn(item):
    if os.environ.get("FAIL"):
        raise ValueError(f"down: {item}")
    return {"text": item, "n": len(item)}
"""


def _retry_peak_kib(tmp_path: Path, n: int) -> int:
    """Peak RSS of ``--retry-failed`` over ``n`` failed items, measured by a small parent.

    A child's ru_maxrss is never below its parent's RSS when it forked: the parent here
    is a bare interpreter, far smaller than a retry.
    """
    base = tmp_path / str(n)
    base.mkdir()
    source = base / "input.txt"
    source.write_text("".join(f"line {i:06d} with a few words to make it longer\n"
                              for i in range(n)))  # fmt: skip
    module = base / "failing.py"
    module.write_text(FAILING)
    out = base / "out.jsonl"
    args = ["run", "--input", str(source), "--output", str(out), "--checkpoint",
            str(base / "ck"), "--processor", f"{module}:fn", "--retries", "0", "-q",
            "--early-stop", "0"]  # every item fails, on purpose  # fmt: skip
    first = run_cli(*args, env={"FAIL": "1"}, check=EXIT_ITEMS_FAILED)
    assert summary_of(first)["failed"] == n
    argv = [sys.executable, "-c", PEAK_RSS % CLI_TIMEOUT, *cli_command(*args, "--retry-failed")]
    measured = subprocess.run(argv, capture_output=True, text=True, timeout=CLI_TIMEOUT,
                              check=True)  # fmt: skip
    assert not out.with_name("out.failed.jsonl").exists(), "the retry left failed items"
    assert out.read_bytes().count(b"\n") == n
    return int(measured.stdout)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_peak_rss_does_not_grow_with_the_failed_items(tmp_path: Path) -> None:
    small, large = _retry_peak_kib(tmp_path, 5_000), _retry_peak_kib(tmp_path, 50_000)
    # Measured: 32 MiB and 38 MiB; the in-memory retry took 83 MiB and 530 MiB.
    assert large - small < 20 * 1024, f"peak RSS {small} KiB for 5,000, {large} KiB for 50,000"
