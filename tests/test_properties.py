"""Property tests of the two things every guarantee rests on.

* Shards partition the input: whatever the bytes, the number of shards and the read chunk
  size, the lines the shard readers yield are exactly the input's non-blank lines, each
  once, with their true byte offsets, and each shard holds as many as its plan says.
* A sealed record never lies: a damaged checkpoint or manifest either reads back as the
  very record that was written or is refused; it never decodes to something else.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncproc._errors import CorruptCheckpointError
from asyncproc.engine import reader as _reader
from asyncproc.engine.planning import plan
from asyncproc.engine.reader import read_lines
from asyncproc.storage.records import SegmentRef, ShardCheckpoint

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


async def shard_lines(path: Path, start: int, end: int) -> list[Line]:
    return [
        line
        async for starts, raws in read_lines(path, start, end)
        for line in zip(starts, raws, strict=True)
    ]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(parts=CONTENT, workers=st.integers(1, 8), chunk=st.integers(1, 16))
def test_shards_partition_the_lines(
    parts: list[bytes], workers: int, chunk: int, tmp_path: Path
) -> None:
    data = b"".join(parts)
    path = tmp_path / "input.txt"
    path.write_bytes(data)
    saved = _reader.CHUNK
    _reader.CHUNK = chunk  # tiny reads put chunk boundaries everywhere
    try:
        _, shards = plan(path, workers, auto=1)
        seen: list[Line] = []
        first = 0
        for shard in shards:
            lines = anyio.run(shard_lines, path, shard.start, shard.end)
            assert len(lines) == shard.items, (shard, lines)
            assert shard.first_index == first
            first += shard.items
            seen += lines
    finally:
        _reader.CHUNK = saved
    assert [s.start for s in shards[1:]] == [s.end for s in shards[:-1]]
    assert (shards[0].start, shards[-1].end) == (0, len(data))
    assert seen == reference_lines(data)


CHECKPOINT = ShardCheckpoint(
    run_id="run_20261123_143022",
    shard_id=3,
    generation=7,
    offset=48_213,
    next_index=1200,
    processed=1190,
    failed=10,
    attempts=2,
    segments=(SegmentRef("0003.001-9f3c1a.out", 91_234),),
    dead_segments=(SegmentRef("0003.001-9f3c1a.dead", 2_310),),
    done=False,
    updated_at=1_763_900_000.25,
)


def test_an_intact_checkpoint_reads_back() -> None:
    """Without this, a decoder that refused everything would pass the two tests below."""
    assert ShardCheckpoint.from_bytes(CHECKPOINT.to_bytes(), "checkpoint") == CHECKPOINT


@given(position=st.integers(0, 10_000), value=st.integers(0, 255))
def test_a_damaged_checkpoint_is_refused_or_unchanged(position: int, value: int) -> None:
    raw = bytearray(CHECKPOINT.to_bytes())
    raw[position % len(raw)] = value
    try:
        read = ShardCheckpoint.from_bytes(bytes(raw), "checkpoint")
    except CorruptCheckpointError:
        return
    assert read == CHECKPOINT


@given(length=st.integers(0, 10_000))
def test_a_torn_checkpoint_is_refused(length: int) -> None:
    raw = CHECKPOINT.to_bytes()
    with pytest.raises(CorruptCheckpointError):
        ShardCheckpoint.from_bytes(raw[: length % len(raw)], "checkpoint")
