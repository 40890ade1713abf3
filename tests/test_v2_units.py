"""Work units that split while they run, in one process: same bytes, nothing twice.

A skewed input (the first half slow, the second instant) leaves one unit running alone
while a slot is idle, so the coordinator splits it. The tests check that a split really
happened (the summary's ``units``, the manifest's units), that the output is the bytes
of a run that could not split (``--workers 1``), that ``show --json`` of a run stopped
right after a split lists units that partition the input, and that a checkpoint written
past a split by an attempt that never heard of it is refused on resume.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import (
    describe,
    expected_array,
    numbered_lines,
    run_cli,
    run_ok,
    summary_of,
    text_items,
    write_lines,
)
from v2kit import (
    Arg,
    call_env,
    calls,
    committed,
    extents,
    manifest_of,
    the_run,
    write_processor,
)

from asyncproc.runs.rundir import local_run
from asyncproc.storage.faults import CRASH_EXIT
from asyncproc.storage.records import Manifest, SegmentRef, UnitCheckpoint

ITEMS = 3000
SLOW = {"ASYNCPROC_TEST_SLOW_BELOW": str(ITEMS // 2)}


class Skewed:
    """The skewed job: its input, its processor and the bytes of a run that cannot split."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.source = write_lines(base / "input.txt", numbered_lines(ITEMS))
        self.raw = self.source.read_bytes()
        self.items = text_items(self.raw)
        self.index = {item: k for k, item in enumerate(self.items)}
        self.processor = write_processor(base / "skewed.py")
        self.clean = b""

    def args(self, out_dir: Path, *extra: Arg) -> list[Arg]:
        out_dir.mkdir(exist_ok=True)
        return [
            "run", "--input", self.source, "--output", out_dir / "result.json",
            "--checkpoint", out_dir / "ck", "--processor", f"{self.processor}:work",
            "--retries", "0", "--concurrency", "16", *extra,
        ]  # fmt: skip


@pytest.fixture(scope="module")
def skewed(tmp_path_factory: pytest.TempPathFactory) -> Skewed:
    job = Skewed(tmp_path_factory.mktemp("v2_units"))
    out_dir = job.base / "unsplit"
    log = job.base / "unsplit.log"
    summary = run_ok(*job.args(out_dir, "--workers", "1"), env=call_env(log, SLOW))
    assert summary["units"] == 1, f"one slot has nothing to split for: {summary}"
    job.clean = (out_dir / "result.json").read_bytes()
    assert job.clean == expected_array((i, {"item": s}) for i, s in enumerate(job.items))
    assert len(calls(log)) == ITEMS
    return job


def test_a_skewed_run_splits_and_gives_the_unsplit_bytes(skewed: Skewed, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    summary = run_ok(
        *skewed.args(tmp_path, "--workers", "2", "--batch-size", "100"), env=call_env(log, SLOW)
    )
    assert summary["workers"] == 2 and summary["units"] > 2, f"no split happened: {summary}"
    assert summary["processed"] == ITEMS and summary["resumed"] is False, summary
    assert (tmp_path / "result.json").read_bytes() == skewed.clean
    called = Counter(calls(log))
    assert set(called) == set(skewed.items) and max(called.values()) == 1, (
        "a split must hand out every item once"
    )


def _crash_at_split(skewed: Skewed, out_dir: Path, *extra: Arg, env: dict[str, str]) -> Path:
    """Run the skewed job until its first split is recorded; return the run directory."""
    crashed = run_cli(
        *skewed.args(out_dir, "--workers", "2", *extra),
        env={**env, "ASYNCPROC_CRASH_AT": "split_recorded:1"},
    )
    assert crashed.returncode == CRASH_EXIT, describe(crashed, "expected the split crash")
    assert "crash point split_recorded reached" in crashed.stderr, describe(crashed)
    run_dir = the_run(out_dir / "ck")
    assert run_dir is not None
    return run_dir


def _the_split(manifest: Manifest) -> tuple[int, int, int]:
    """(start of the new unit, end of the unit it was cut from, that unit's end index)."""
    assert sorted(u.unit_id for u in manifest.units) == [0, 1, 2], manifest.units
    starts = {u.unit_id: u for u in manifest.units}
    cut, old_end = starts[2], starts[1]
    assert 0 < cut.start < old_end.start, f"unit 2 should be cut from unit 0: {manifest.units}"
    return cut.start, old_end.start, old_end.first_index


def test_show_json_lists_the_units_of_a_run_stopped_after_a_split(
    skewed: Skewed, tmp_path: Path
) -> None:
    log = tmp_path / "calls.log"
    run_dir = _crash_at_split(skewed, tmp_path, "--batch-size", "100", env=call_env(log, SLOW))
    manifest = manifest_of(run_dir)
    assert manifest is not None
    _the_split(manifest)

    shown = run_cli("show", run_dir.name, "--checkpoint", tmp_path / "ck", "--json", check=0)
    detail = orjson.loads(shown.stdout)
    assert detail["status"] == "interrupted" and detail["total_items"] == ITEMS, detail
    shards: list[dict[str, Any]] = sorted(detail["shards"], key=lambda s: s["start"])
    assert {s["shard_id"] for s in shards} == {0, 1, 2}, shards
    assert shards[0]["start"] == 0 and shards[-1]["end"] == len(skewed.raw), shards
    for left, right in itertools.pairwise(shards):
        assert left["end"] == right["start"], f"units must touch: {shards}"
    for shard in shards:
        start, end = shard["start"], shard["end"]
        assert start == 0 or skewed.raw[start - 1 : start] == b"\n", f"not a line start: {shard}"
        assert shard["items"] == len(text_items(skewed.raw[start:end])), shard
    assert sum(s["items"] for s in shards) == ITEMS

    done, before = committed(run_dir), len(calls(log))
    summary = run_ok(*skewed.args(tmp_path, "--workers", "2", "--batch-size", "100"),
                     env=call_env(log, SLOW))  # fmt: skip
    assert summary["resumed"] is True and summary["units"] >= 3, summary
    assert (tmp_path / "result.json").read_bytes() == skewed.clean
    again = Counter(skewed.index[c] for c in calls(log)[before:])
    assert set(again) == set(range(ITEMS)) - done and max(again.values()) == 1


def _stale_attempt(run_dir: Path, good: UnitCheckpoint, end: int, end_index: int) -> int:
    """Write what an attempt at unit 0 that never heard of the split could have written.

    A newer generation than ``good``, ending past the split, over a segment of bogus
    records. Returns its generation.
    """
    name = "0000.009-0ba5ed.out"
    stale_items = range(good.next_index, end_index)
    bogus = b"".join(orjson.dumps({"index": k, "stale": True}) + b",\n" for k in stale_items)
    (run_dir / "segments" / name).write_bytes(bogus)
    stale = replace(
        good, generation=good.generation + 1, offset=end, next_index=end_index,
        processed=good.processed + end_index - good.next_index, attempts=good.attempts + 1,
        segments=(*good.segments, SegmentRef(name, len(bogus))), updated_at=time.time(),
    )  # fmt: skip
    store = local_run(run_dir).unit_store(0)
    (run_dir / store.slot_name(stale.generation)).write_bytes(stale.to_bytes())
    return stale.generation


def test_a_checkpoint_past_a_split_is_refused_and_the_older_slot_used(
    skewed: Skewed, tmp_path: Path
) -> None:
    log = tmp_path / "calls.log"
    # The fast half's first items wait for unit 0's first checkpoint, so unit 1 cannot
    # finish (and split unit 0) before unit 0 has one. Only four items wait: lanes are
    # shared, and gating more items than there are lanes could hold every lane.
    first_checkpoint = tmp_path / "ck" / "run_*" / "units" / "0000.*.ckpt"
    gate = {**SLOW, "ASYNCPROC_TEST_GATED": f"{ITEMS // 2}:{ITEMS // 2 + 4}",
            "ASYNCPROC_TEST_GATE": str(first_checkpoint)}  # fmt: skip
    run_dir = _crash_at_split(skewed, tmp_path, "--batch-size", "20", env=call_env(log, gate))
    manifest = manifest_of(run_dir)
    assert manifest is not None
    split_at, old_end, old_end_index = _the_split(manifest)
    start, end, _, split_index = extents(manifest)[0]
    assert (start, end) == (0, split_at)
    good = local_run(run_dir).unit_store(0).load(0, split_at).checkpoint
    assert good is not None and good.generation >= 1, f"unit 0 never committed: {good}"
    assert good.offset <= split_at, good

    generation = _stale_attempt(run_dir, good, old_end, old_end_index)
    # Nothing is wrong with the stale checkpoint but where it ends: without the plan's
    # end it would be loaded, bogus records and all.
    unbounded = local_run(run_dir).unit_store(0).load().checkpoint
    assert unbounded is not None and unbounded.generation == generation, unbounded

    before = len(calls(log))
    proc = run_cli(*skewed.args(tmp_path, "--workers", "2", "--batch-size", "20"),
                   env=call_env(log, SLOW))  # fmt: skip
    assert proc.returncode == 0, describe(proc, "the resume failed")
    summary = summary_of(proc)
    assert summary["resumed"] is True, summary
    refused = [line for line in proc.stderr.splitlines() if "did not know of a split" in line]
    assert refused and "unit 0" in refused[0] and f"byte {old_end}" in refused[0], describe(
        proc, "the resume should say which unit's checkpoint it refused, and why"
    )
    assert f"resuming from checkpoint generation {good.generation} " in proc.stderr, describe(
        proc, "the resume should say it fell back to the older slot"
    )
    assert (tmp_path / "result.json").read_bytes() == skewed.clean, "stale records merged"
    # Unit 0's items past its good checkpoint were processed again, not taken from the
    # stale segment.
    again = {skewed.index[c] for c in calls(log)[before:]}
    assert set(range(good.next_index, split_index)) <= again
