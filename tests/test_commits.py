"""The committer against a disk that stalls: lanes run on, checkpoints stay on batches.

A real ``UnitStore`` writes real files; the only change is a gate that holds the first
commit's fsyncs until the lanes have ordered several more batches (a slow disk, made
deterministic). The next commit must then take every whole batch ordered meanwhile
(bigger commits, not stalled lanes), every checkpoint must fall on a batch boundary
until the unit's end, and the committed bytes must be the items in input order.
"""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import orjson
import pytest
from conftest import numbered_lines, text_items, write_lines
from unitkit import OneUnit, fresh_unit, run_unit

from asyncproc.engine.executor import UnitHandle
from asyncproc.engine.lanes import FEED_LOW_WATER
from asyncproc.engine.unit import UnitRun, window
from asyncproc.engine.units import UnitSpec
from asyncproc.storage.localfs import LocalStorage
from asyncproc.storage.records import UnitCheckpoint
from asyncproc.storage.unitstore import UnitStore

ITEMS = 1000
BATCH = 100
STALL_UNTIL = 550  # items ordered before the stalled first commit may finish


class Gate:
    """Holds the first commit until the lanes have got far enough."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.stalled = False

    def store(self, spec: UnitSpec) -> UnitStore:
        gate = self

        class StalledStore(UnitStore):
            def commit(self, data: dict[str, bytes], checkpoint: UnitCheckpoint) -> UnitCheckpoint:
                if not gate.stalled:
                    gate.stalled = True
                    assert gate.reached.wait(timeout=30), "the lanes never got ahead"
                return super().commit(data, checkpoint)

        return StalledStore(LocalStorage(Path(spec.run_dir)), spec.unit_id)


@pytest.mark.parametrize("capped", [False, True], ids=["uncapped", "one-batch-per-commit"])
def test_a_stalled_commit_lets_lanes_run_on(capped: bool, tmp_path: Path) -> None:
    source = write_lines(tmp_path / "input.txt", numbered_lines(ITEMS))
    items = text_items(source.read_bytes())
    gate = Gate()
    seen = 0

    async def work(item: str) -> str:
        nonlocal seen
        seen += 1
        if seen == STALL_UNTIL + 4:  # a few past, so that item STALL_UNTIL is ordered
            gate.reached.set()
        await anyio.lowlevel.checkpoint()
        return item

    run_dir = tmp_path / "run_test"
    unit = fresh_unit(run_dir, source, BATCH, one_batch_per_commit=capped)
    final = anyio.run(run_unit, unit, work, 4, gate.store)

    marks = [c.checkpoint.next_index for c in unit.commits]
    assert final.offset == source.stat().st_size and marks[-1] == ITEMS
    assert all(m % BATCH == 0 for m in marks), marks
    if capped:
        assert marks == list(range(BATCH, ITEMS + 1, BATCH))
    else:
        assert marks[0] == BATCH and marks[1] >= STALL_UNTIL - BATCH, marks
        assert len(marks) < ITEMS // BATCH, "a late commit should take several batches"
    assert sum(c.processed for c in unit.commits) == ITEMS
    (segment,) = final.segments
    raw = (run_dir / "segments" / segment.name).read_bytes()[: segment.length]
    records = [orjson.loads(line) for line in raw.splitlines()]
    assert records == [{"index": i, "result": s} for i, s in enumerate(items)]


class HeldSecond(OneUnit):
    """A one-unit work source that keeps its running unit and holds its second commit
    until every task of the run is blocked while the unit still has lines to hand out."""

    unit: UnitRun | None = None
    durable_then = calls_then = -1

    def running(self, unit_id: int, handle: UnitHandle) -> None:
        assert isinstance(handle, UnitRun)
        self.unit = handle

    def store(self, spec: UnitSpec, calls: list[int]) -> UnitStore:
        held = self

        class Store(UnitStore):
            def commit(self, data: dict[str, bytes], checkpoint: UnitCheckpoint) -> UnitCheckpoint:
                if len(held.commits) == 1:  # the second commit: one is durable
                    held.durable_then = held.commits[0].checkpoint.next_index
                    anyio.from_thread.run(held.settled, calls)
                return super().commit(data, checkpoint)

        return Store(LocalStorage(Path(spec.run_dir)), spec.unit_id)

    async def settled(self, calls: list[int]) -> None:
        """Every task blocked, the unit holding lines and its feeder resting (it waits for
        room only above its low-water mark): a lane that could run on would not be."""
        unit = self.unit
        assert unit is not None
        with anyio.fail_after(30):
            while True:
                await anyio.wait_all_tasks_blocked()
                if len(unit.lines) > FEED_LOW_WATER:
                    break
                await anyio.sleep(0.001)  # the feeder reads in a thread
        self.calls_then = calls[0]


def test_lanes_stop_one_window_past_the_last_durable_commit(tmp_path: Path) -> None:
    """While a commit is being made durable, its items are not: a SIGKILL then redoes them,
    so the window (what a kill may redo) runs from the last commit that returned."""
    items = 20 * ITEMS
    source = write_lines(tmp_path / "input.txt", numbered_lines(items))
    calls = [0]

    async def work(item: str) -> str:
        calls[0] += 1
        await anyio.lowlevel.checkpoint()
        return item

    run_dir = tmp_path / "run_test"
    fresh = fresh_unit(run_dir, source, BATCH)
    unit = HeldSecond(fresh.spec, fresh.start)
    final = anyio.run(run_unit, unit, work, 4, lambda spec: unit.store(spec, calls))
    assert final.next_index == items and calls[0] == items
    limit = window(4, BATCH)
    assert unit.durable_then >= BATCH and unit.calls_then >= 0
    assert unit.commits[1].checkpoint.next_index > unit.durable_then  # the held cut
    assert unit.calls_then == unit.durable_then + limit, (
        f"lanes ran to {unit.calls_then}, not one window ({limit}) past the last durable "
        f"commit ({unit.durable_then})"
    )
