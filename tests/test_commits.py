"""The committer against a disk that stalls: lanes run on, checkpoints stay on batches.

A real ``ShardStore`` writes real files; the only change is a gate that holds the first
commit's fsyncs until the lanes have ordered several more batches (a slow disk, made
deterministic). The next commit must then take every whole batch ordered meanwhile
(bigger commits, not stalled lanes), every checkpoint must fall on a batch boundary
until the shard's end, and the committed bytes must be the items in input order.
"""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import orjson
import pytest
from conftest import numbered_lines, text_items, write_lines

from asyncproc.engine import worker as _worker
from asyncproc.engine.planning import plan
from asyncproc.engine.processors import load_processor
from asyncproc.engine.worker import Commit, ShardSpec, ShardWorker, first_checkpoint
from asyncproc.storage.local import ShardStore
from asyncproc.storage.records import ShardCheckpoint

ITEMS = 1000
BATCH = 100
STALL_UNTIL = 550  # items ordered before the stalled first commit may finish


class Gate:
    """Holds the first commit until the lanes have got far enough."""

    def __init__(self) -> None:
        self.reached = threading.Event()

    def store(self) -> type[ShardStore]:
        gate = self

        class StalledStore(ShardStore):
            stalled = False

            def commit(self, data: dict[str, bytes], checkpoint: ShardCheckpoint) -> None:
                if not StalledStore.stalled:
                    StalledStore.stalled = True
                    assert gate.reached.wait(timeout=30), "the lanes never got ahead"
                super().commit(data, checkpoint)

        return StalledStore


def _spec(tmp_path: Path, source: Path, capped: bool) -> ShardSpec:
    run_dir = tmp_path / "run"
    for sub in ("shards", "segments"):
        (run_dir / sub).mkdir(parents=True)
    _, (shard,) = plan(source, 1, auto=1)
    return ShardSpec(
        run_id="run_test", run_dir=str(run_dir), input_path=str(source), shard=shard,
        format="text", output_kind="jsonl", lanes=4, batch_size=BATCH, retries=0,
        timeout=None, commit_interval=60.0, one_batch_per_commit=capped,
    )  # fmt: skip


@pytest.mark.parametrize("capped", [False, True], ids=["uncapped", "one-batch-per-commit"])
def test_a_stalled_commit_lets_lanes_run_on(
    capped: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_lines(tmp_path / "input.txt", numbered_lines(ITEMS))
    items = text_items(source.read_bytes())
    gate = Gate()
    monkeypatch.setattr(_worker, "store_for", lambda durable: gate.store())
    seen = 0

    async def work(item: str) -> str:
        nonlocal seen
        seen += 1
        if seen == STALL_UNTIL + 4:  # a few past, so that item STALL_UNTIL is ordered
            gate.reached.set()
        await anyio.lowlevel.checkpoint()
        return item

    spec = _spec(tmp_path, source, capped)
    commits: list[Commit] = []
    worker = ShardWorker(spec, load_processor(work), first_checkpoint(spec), commits.append)
    final = anyio.run(worker.run)

    marks = [c.checkpoint.next_index for c in commits]
    assert final.done and marks[-1] == ITEMS
    assert all(m % BATCH == 0 for m in marks), marks
    if capped:
        assert marks == list(range(BATCH, ITEMS + 1, BATCH))
    else:
        assert marks[0] == BATCH and marks[1] >= STALL_UNTIL - BATCH, marks
        assert len(marks) < ITEMS // BATCH, "a late commit should take several batches"
    assert sum(c.processed for c in commits) == ITEMS
    (segment,) = final.segments
    raw = (Path(spec.run_dir) / "segments" / segment.name).read_bytes()[: segment.length]
    records = [orjson.loads(line) for line in raw.splitlines()]
    assert records == [{"index": i, "result": s} for i, s in enumerate(items)]
