"""Corrupt or missing run state: the resume falls back to what it can prove good.

A multi-shard run is stopped half-way with ``--simulate-crash``; then one shard's state
is damaged and the same command is run again. It must finish (exit 0) with output that
is byte-identical to a clean run, name the damaged shard on stderr, and redo exactly the
items after the newest state that is still provably good: the older checkpoint
generation when only the newest is bad, the shard's start when nothing is left.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from conftest import (
    describe,
    error_lines,
    expected_text_stats_array,
    logging_processor,
    numbered_lines,
    run_cli,
    run_ok,
    summary_of,
    text_items,
    write_lines,
)
from faultkit import (
    ITEMS,
    assert_no_traceback,
    job_args,
    only_run_dir,
    read_checkpoint,
    read_manifest,
    refused,
    slot_files,
    unit_end,
    unit_end_index,
    write_module,
)

from asyncproc.storage.records import UnitCheckpoint, seal, unseal

CRASH_AFTER = 1500

# text_stats, plus a log of every item the processor is called with.
PROCESSOR = logging_processor(
    """
async def work(item):
    log_call(item)
    return {
        "original": item,
        "length": len(item),
        "word_count": len(item.split()),
        "uppercase": item.upper(),
    }
"""
)


class Job:
    def __init__(self, source: Path, processor: Path, clean: bytes) -> None:
        self.source = source
        self.processor = processor
        self.clean = clean
        self.index_of = {s: i for i, s in enumerate(text_items(source.read_bytes()))}


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Job:
    base = tmp_path_factory.mktemp("corrupt_job")
    source = write_lines(base / "input.txt", numbered_lines(ITEMS))
    processor = write_module(base / "counting.py", PROCESSOR)
    output = base / "clean" / "result.json"
    output.parent.mkdir()
    args = job_args(source, output, base / "ck", "--processor", f"{processor}:work")
    run_ok(*args, env={"ASYNCPROC_TEST_CALL_LOG": str(base / "clean.log")})
    clean = output.read_bytes()
    assert clean == expected_text_stats_array(source.read_bytes())
    return Job(source, processor, clean)


class HalfDone:
    """A crashed run, and the shard chosen to be damaged."""

    def __init__(self, job: Job, tmp_path: Path) -> None:
        out_dir = tmp_path / "out"
        out_dir.mkdir()
        self.output = out_dir / "result.json"
        self.ck = tmp_path / "ck"
        self.log = tmp_path / "calls.log"
        self.args = job_args(
            job.source, self.output, self.ck, "--processor", f"{job.processor}:work"
        )
        crashed = run_cli(*self.args, "--simulate-crash", str(CRASH_AFTER), env=self.env("crash"))
        assert crashed.returncode == 3, describe(crashed, "the simulated crash should exit 3")
        self.run_dir = only_run_dir(self.ck)
        self.manifest = read_manifest(self.run_dir)
        # The first shard with both generations on disk and work left to do.
        for shard in self.manifest.units:
            files = slot_files(self.run_dir, shard.unit_id)
            if len(files) == 2 and read_checkpoint(files[1]).offset < unit_end(
                self.manifest, shard.unit_id
            ):
                self.shard = shard
                self.older, self.newest = files
                break
        else:
            raise AssertionError(f"no shard with two checkpoint generations in {self.run_dir}")
        old, new = read_checkpoint(self.older), read_checkpoint(self.newest)
        assert new.generation == old.generation + 1, (old, new)
        assert old.next_index < new.next_index, (old, new)
        self.old_state, self.new_state = old, new

    def env(self, tag: str) -> dict[str, str]:
        return {"ASYNCPROC_TEST_CALL_LOG": str(self.log.with_suffix(f".{tag}.log"))}

    def out_segment(self, state: UnitCheckpoint) -> Path:
        (ref,) = state.segments
        return self.run_dir / "segments" / ref.name


def _newest_raw(half: HalfDone) -> dict[str, object]:
    data = orjson.loads(half.newest.read_bytes())
    assert isinstance(data, dict)
    return data


def _zero_length(half: HalfDone) -> str:
    half.newest.write_bytes(b"")
    return "older"


def _truncated(half: HalfDone) -> str:
    raw = half.newest.read_bytes()
    half.newest.write_bytes(raw[: len(raw) // 2])
    return "older"


def _invalid_json(half: HalfDone) -> str:
    half.newest.write_bytes(b'{"run_id": "run_x", "generation": 9, \x00\xff not json at all')
    return "older"


def _wrong_type_resealed(half: HalfDone) -> str:
    data = _newest_raw(half)
    del data["checksum"]
    data["offset"] = str(data["offset"])
    half.newest.write_bytes(seal(data))
    return "older"


def _unknown_schema_resealed(half: HalfDone) -> str:
    data = _newest_raw(half)
    del data["checksum"]
    data["schema"] = 99
    half.newest.write_bytes(seal(data))
    return "older"


def _checksum_mismatch(half: HalfDone) -> str:
    data = _newest_raw(half)
    assert isinstance(data["processed"], int)
    data["processed"] += 1  # the old checksum stays
    half.newest.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    return "older"


def _both_checkpoints_missing(half: HalfDone) -> str:
    half.older.unlink()
    half.newest.unlink()
    assert half.out_segment(half.new_state).stat().st_size > 0, "segments must remain"
    return "start"


def _segment_shorter(half: HalfDone) -> str:
    segment = half.out_segment(half.new_state)
    (new_ref,), (old_ref,) = half.new_state.segments, half.old_state.segments
    assert new_ref.name == old_ref.name and old_ref.length < new_ref.length - 1
    os.truncate(segment, new_ref.length - 1)
    return "older"


def _segment_missing(half: HalfDone) -> str:
    half.out_segment(half.new_state).unlink()
    return "start"


def flip_digit(segment: Path, low: int, high: int) -> None:
    """Change one digit in ``segment[low:high]`` to another: the line stays valid JSON."""
    raw = bytearray(segment.read_bytes())
    at = next(k for k in range((low + high) // 2, high) if chr(raw[k]).isdigit())
    raw[at] = ord("1") if raw[at] != ord("1") else ord("2")
    segment.write_bytes(bytes(raw))
    orjson.loads(raw[raw.rfind(b"\n", 0, at) + 1 : raw.find(b"\n", at)])  # still JSON


def _digit_flipped_newest_batch(half: HalfDone) -> str:
    (new_ref,), (old_ref,) = half.new_state.segments, half.old_state.segments
    flip_digit(half.out_segment(half.new_state), old_ref.length, new_ref.length)
    return "older"


def _digit_flipped_older_batch(half: HalfDone) -> str:
    (old_ref,) = half.old_state.segments
    flip_digit(half.out_segment(half.old_state), 0, old_ref.length)
    return "start"


DAMAGE: dict[str, Callable[[HalfDone], str]] = {
    "zero-length-newest": _zero_length,
    "truncated-newest": _truncated,
    "invalid-json": _invalid_json,
    "wrong-type-correct-checksum": _wrong_type_resealed,
    "unknown-schema-version": _unknown_schema_resealed,
    "checksum-mismatch": _checksum_mismatch,
    "both-checkpoints-missing-segments-present": _both_checkpoints_missing,
    "segment-shorter-than-checkpoint": _segment_shorter,
    "segment-missing": _segment_missing,
    "digit-flipped-in-newest-batch": _digit_flipped_newest_batch,
    "digit-flipped-in-older-batch": _digit_flipped_older_batch,
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_shard_state_resumes_exactly(case: str, job: Job, tmp_path: Path) -> None:
    half = HalfDone(job, tmp_path)
    back_to = DAMAGE[case](half)
    shard = half.shard
    resume_from = half.old_state.next_index if back_to == "older" else shard.first_index

    resumed = run_cli(*half.args, env=half.env("resume"))
    assert_no_traceback(resumed)
    assert resumed.returncode == 0, describe(resumed, f"{case}: the resume should finish")
    summary = summary_of(resumed)
    assert summary["resumed"] is True, summary
    assert summary["run_id"] == half.run_dir.name, summary
    assert summary["processed"] == ITEMS and summary["failed"] == 0, summary
    assert half.output.read_bytes() == job.clean, f"{case}: output differs from a clean run"

    # The damaged shard redoes exactly the items after the newest good state.
    calls = half.log.with_suffix(".resume.log").read_text(encoding="utf-8").splitlines()
    end = unit_end_index(half.manifest, shard.unit_id)
    redone = [job.index_of[c] for c in calls if shard.first_index <= job.index_of[c] < end]
    assert len(redone) == len(set(redone)), f"{case}: an item of the shard was redone twice"
    assert sorted(redone) == list(range(resume_from, end)), (
        f"{case}: shard {shard.unit_id} should resume at item {resume_from} "
        f"({back_to}); it redid {len(redone)} items from {min(redone, default=None)}"
    )
    # ... and says which shard it had to repair.
    mentions = re.search(rf"unit\D{{0,3}}0*{shard.unit_id}\b", resumed.stderr, re.IGNORECASE)
    assert mentions, describe(resumed, f"{case}: stderr should name shard {shard.unit_id}")


@pytest.mark.parametrize("damage", ["garbage", "checksum-mismatch"])
def test_corrupt_manifest_needs_new_run(damage: str, job: Job, tmp_path: Path) -> None:
    half = HalfDone(job, tmp_path)
    manifest = half.run_dir / "manifest.json"
    if damage == "garbage":
        manifest.write_bytes(b"\x00\x01 this is not a manifest\n")
    else:
        data = orjson.loads(manifest.read_bytes())
        data["total_items"] += 1
        manifest.write_bytes(orjson.dumps(data))

    refused = run_cli(*half.args, env=half.env("refused"))
    assert_no_traceback(refused)
    assert refused.returncode == 1, describe(refused, "a corrupt manifest should exit 1")
    errors = error_lines(refused.stderr)
    assert len(errors) == 1, describe(refused, "expected exactly one 'asyncproc: error:' line")
    assert "--new-run" in errors[0], describe(refused)
    assert half.run_dir.name in errors[0], describe(refused, "the error should name the run")
    assert refused.stdout.strip() == "", describe(refused)
    assert not half.output.exists()

    fresh = run_ok(*half.args, "--new-run", env=half.env("fresh"))
    assert fresh["resumed"] is False, fresh
    assert fresh["run_id"] != half.run_dir.name, fresh
    assert fresh["processed"] == ITEMS, fresh
    assert half.output.read_bytes() == job.clean


def test_schema_2_checkpoints_still_resume(job: Job, tmp_path: Path) -> None:
    """A checkpoint written before segments had a CRC is read, its bytes trusted by length."""
    half = HalfDone(job, tmp_path)
    for slot in half.run_dir.glob("units/*.ckpt"):
        data = unseal(slot.read_bytes(), slot.name)
        for key in ("segments", "dead_segments"):
            data[key] = [{"name": r["name"], "length": r["length"]} for r in data[key]]
        slot.write_bytes(seal({**data, "schema": 2}))

    resumed = run_cli(*half.args, env=half.env("resume"))
    assert resumed.returncode == 0, describe(resumed, "a schema-2 checkpoint should resume")
    assert half.output.read_bytes() == job.clean
    calls = half.log.with_suffix(".resume.log").read_text(encoding="utf-8").splitlines()
    assert len(calls) <= ITEMS - CRASH_AFTER + 300, "schema-2 checkpoints were not used"


DAMAGING = """
import os

from pathlib import Path


async def work(item):
    # On the last item, change one digit the run committed long ago, once.
    mark = Path(os.environ["DAMAGE_MARK"])
    if item.startswith("line 002999 ") and not mark.exists():
        (segment,) = Path(os.environ["DAMAGE_CK"]).glob("run_*/segments/0000.*.out")
        with segment.open("r+b") as fh:
            head = fh.read(1000)
            at = next(k for k in range(500, 1000) if chr(head[k]).isdigit())
            fh.seek(at)
            fh.write(b"1" if head[at] != ord("1") else b"2")
        mark.write_text(segment.name)
    return {
        "original": item,
        "length": len(item),
        "word_count": len(item.split()),
        "uppercase": item.upper(),
    }
"""


def test_damage_found_at_the_merge_stops_then_resumes(job: Job, tmp_path: Path) -> None:
    """Bytes changed after the run loaded them are caught by the merge: nothing published,
    one line naming the segment; the same command then redoes the unit and finishes."""
    processor = write_module(tmp_path / "damaging.py", DAMAGING)
    output, ck, mark = tmp_path / "out.json", tmp_path / "ck", tmp_path / "damaged"
    args = job_args(job.source, output, ck, "--processor", f"{processor}:work")
    args[args.index("--workers") + 1] = "1"
    env = {"DAMAGE_CK": str(ck), "DAMAGE_MARK": str(mark)}

    line = refused(run_cli(*args, env=env), 1, mark.read_text(), "run the same command")
    assert str(ck) in line, line
    assert not output.exists(), "a damaged segment was published"

    resumed = run_cli(*args, env=env)
    assert resumed.returncode == 0, describe(resumed, "the rerun should redo the unit")
    assert output.read_bytes() == job.clean
    assert re.search(r"unit\D{0,3}0\b.*CRC", resumed.stderr), describe(resumed)
