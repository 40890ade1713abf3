"""Property tests of the things every guarantee rests on.

* Units partition the input: whatever the bytes, the number of units, the density of
  the line index and the read chunk size, the lines the unit readers yield are exactly
  the input's non-blank lines, each once, with their true byte offsets, and each unit
  holds as many as the plan says; and so after any re-cut at indexed points.
* The line index never lies: every entry is a line start and the index of its item.
* A sealed record never lies: a damaged checkpoint or manifest either reads back as the
  very record that was written or is refused; it never decodes to something else.
"""

from __future__ import annotations

from pathlib import Path

import aiofiles
import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncproc._errors import CorruptCheckpointError
from asyncproc.engine import planning, units
from asyncproc.engine.reader import LineReader
from asyncproc.engine.units import Place, Plan, recut
from asyncproc.storage.records import LineIndex, SegmentRef, UnitCheckpoint

# Few distinct bytes, so that newlines, blank lines, CR and whitespace-only lines are common.
CONTENT = st.lists(
    st.sampled_from([b"a", b"b", b" ", b"\n", b"\n", b"\r", b"\xc3\xa9"]), max_size=300
)


Line = tuple[int, bytes]  # start offset, bytes without the newline


def reference_lines(data: bytes) -> list[Line]:
    """The non-blank lines of ``data`` with their offsets, computed the obvious way."""
    lines, start = [], 0
    for raw in data.split(b"\n"):
        if raw.strip():
            lines.append((start, raw))
        start += len(raw) + 1
    return lines


async def unit_lines(path: Path, start: int, end: int, chunk: int) -> list[Line]:
    async with aiofiles.open(path, "rb") as fh:
        await fh.seek(start)
        reader = LineReader(fh, start, str(path), chunk)
        lines: list[Line] = []
        while (block := await reader.next(end)) is not None:
            lines += zip(*block, strict=True)
        return lines


def assert_partition(plan: Plan, path: Path, data: bytes, chunk: int) -> None:
    """Reading every unit of ``plan`` gives each non-blank line once, in order."""
    expected = reference_lines(data)
    seen: list[Line] = []
    for unit in plan:
        extent = plan.extent(unit.unit_id)
        lines = anyio.run(unit_lines, path, unit.start, extent.end, chunk)
        assert unit.first_index == len(seen), (unit, len(seen))
        assert len(lines) == extent.end_index - unit.first_index, (unit, lines)
        seen += lines
    assert seen == expected


def assert_index_true(index: LineIndex, data: bytes) -> None:
    starts = {0, *(k + 1 for k, byte in enumerate(data) if byte == ord("\n"))}
    lines = reference_lines(data)
    for offset, item in zip(index.offsets, index.indexes, strict=True):
        assert offset in starts, offset
        assert item == sum(1 for start, _ in lines if start < offset), (offset, item)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    parts=CONTENT, workers=st.integers(1, 8), chunk=st.integers(1, 16), gap=st.integers(1, 9),
    more=st.integers(0, 12),
)  # fmt: skip
def test_units_partition_the_lines_before_and_after_recuts(
    parts: list[bytes], workers: int, chunk: int, gap: int, more: int, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    data = b"".join(parts)
    path = tmp_path / "input.txt"
    path.write_bytes(data)
    monkeypatch.setattr(planning, "MIN_INDEX_GAP", gap)  # a dense index: cuts everywhere
    monkeypatch.setattr(units, "MIN_SPLIT_ITEMS", 2)  # and units of a few items split
    planned = planning.plan(path, workers)
    assert planned.total_items == len(reference_lines(data))
    assert_index_true(planned.index, data)
    plan = Plan(planned.units, len(data), planned.total_items)
    assert plan.units[0].start == 0
    assert_partition(plan, path, data, chunk)
    resume_at = {u.unit_id: Place(u.start, u.first_index) for u in plan}
    recut_plan = recut(plan, planned.index, resume_at, len(plan) + more)
    if more and gap == 1 and planned.total_items >= 2 * len(plan) + 2:
        assert len(recut_plan) > len(plan), "a re-cut that could cut did not"
    assert_partition(recut_plan, path, data, chunk)


CHECKPOINT = UnitCheckpoint(
    run_id="run_20261123_143022",
    unit_id=3,
    generation=7,
    offset=48_213,
    next_index=1200,
    processed=1190,
    failed=10,
    attempts=2,
    segments=(SegmentRef("0003.001-9f3c1a.out", 91_234),),
    dead_segments=(SegmentRef("0003.001-9f3c1a.dead", 2_310),),
    updated_at=1_763_900_000.25,
)


def test_an_intact_checkpoint_reads_back() -> None:
    """Without this, a decoder that refused everything would pass the two tests below."""
    assert UnitCheckpoint.from_bytes(CHECKPOINT.to_bytes(), "checkpoint") == CHECKPOINT


@given(position=st.integers(0, 10_000), value=st.integers(0, 255))
def test_a_damaged_checkpoint_is_refused_or_unchanged(position: int, value: int) -> None:
    raw = bytearray(CHECKPOINT.to_bytes())
    raw[position % len(raw)] = value
    try:
        read = UnitCheckpoint.from_bytes(bytes(raw), "checkpoint")
    except CorruptCheckpointError:
        return
    assert read == CHECKPOINT


@given(length=st.integers(0, 10_000))
def test_a_torn_checkpoint_is_refused(length: int) -> None:
    raw = CHECKPOINT.to_bytes()
    with pytest.raises(CorruptCheckpointError):
        UnitCheckpoint.from_bytes(raw[: length % len(raw)], "checkpoint")
