"""Property tests of the things every guarantee rests on.

* Units partition the input: whatever the bytes (line ends of every kind ``str.splitlines``
  knows, Unicode whitespace, multi-byte characters, undecodable bytes, a byte-order
  mark), the number of units, the density of the line index and the read chunk size, the
  items the unit readers yield are exactly the input's items, each once, with their true
  byte offsets, and each unit holds as many as the plan says; and so after any re-cut at
  indexed points. For UTF-8 text they are the older text tool's ``splitlines()`` +
  ``strip()``; a retry re-reads the same bytes from an item's offset.
* The line index never lies: every entry is an item boundary and the index of its item.
* A sealed record never lies: a damaged checkpoint or manifest either reads back as the
  very record that was written or is refused; it never decodes to something else.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiofiles
import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncproc._errors import CorruptCheckpointError
from asyncproc.engine import planning, units
from asyncproc.engine.items import BOM, items_for
from asyncproc.engine.reader import LineReader
from asyncproc.engine.replay import run as retry_run
from asyncproc.engine.replay.run import LetterReader
from asyncproc.engine.units import Place, Plan, recut
from asyncproc.storage.records import LineIndex, SegmentRef, UnitCheckpoint

# Few distinct pieces, so that line ends of every kind, blank lines, whitespace-only lines
# (ASCII and Unicode), multi-byte characters and undecodable bytes are all common; a
# UTF-8 byte-order mark may start the input.
PIECES = [
    b"a", b"b", b" ", b"\t", b"\n", b"\n", b"\r", b"\r\n", b"\x0b", b"\x0c", b"\x1c", b"\x1e",
    b"\x1f", "\x85".encode(), "\u2028".encode(), "\u2029".encode(), "\xa0".encode(),
    "\u3000".encode(), "\u2003".encode(), "\xe9".encode(), "\u201c".encode(), b"\xe2\x80",
    b"\xff",
]  # fmt: skip
CONTENT = st.tuples(st.booleans(), st.lists(st.sampled_from(PIECES), max_size=200)).map(
    lambda bom_parts: (BOM if bom_parts[0] else b"") + b"".join(bom_parts[1])
)
LINE_ENDS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"

Line = tuple[int, bytes, int]  # start offset, bytes without the line end, end offset


def reference_lines(data: bytes, fmt: str) -> list[Line]:
    """The items of ``data``: see :func:`reference_pieces`."""
    return [(start, raw, end) for start, raw, end, item in reference_pieces(data, fmt) if item]


def reference_pieces(data: bytes, fmt: str) -> list[tuple[int, bytes, int, bool]]:
    """The items of ``data`` with their offsets, computed the obvious way.

    Text: the bytes after a byte-order mark decoded (undecodable bytes kept as surrogate
    escapes), ``str.splitlines(keepends=True)``, an item where ``str.strip()`` leaves
    anything; in ``\\r\\n`` the ``\\r`` stays with the line. JSONL: ``\\n`` lines that
    ``bytes.strip()`` leaves anything of.
    """
    start = len(BOM) if data.startswith(BOM) else 0
    if fmt == "jsonl":
        pieces = [p + b"\n" for p in data[start:].split(b"\n")]
        pieces[-1] = pieces[-1][:-1]
        return _lines(start, pieces, lambda p: p.rstrip(b"\n"), lambda raw: bool(raw.strip()))
    text = data[start:].decode("utf-8", "surrogateescape")
    pieces = [p.encode("utf-8", "surrogateescape") for p in text.splitlines(keepends=True)]

    def body(piece: bytes) -> bytes:
        decoded = piece.decode("utf-8", "surrogateescape")
        return piece[: -len(decoded[-1].encode())] if decoded[-1] in LINE_ENDS else piece

    def keep(raw: bytes) -> bool:
        return bool(raw.decode("utf-8", "surrogateescape").strip())

    return _lines(start, pieces, body, keep)


def _lines(
    start: int, pieces: list[bytes], body: Callable[[bytes], bytes], keep: Callable[[bytes], bool]
) -> list[tuple[int, bytes, int, bool]]:
    lines = []
    for piece in pieces:
        raw = body(piece)
        lines.append((start, raw, start + len(piece), keep(raw)))
        start += len(piece)
    return lines


async def unit_lines(path: Path, start: int, end: int, chunk: int, fmt: str) -> list[Line]:
    async with aiofiles.open(path, "rb") as fh:
        await fh.seek(start)
        reader = LineReader(fh, start, str(path), chunk, format=fmt)
        lines: list[Line] = []
        while (block := await reader.next(end)) is not None:
            lines += zip(*block, strict=True)
        return lines


def assert_partition(plan: Plan, path: Path, data: bytes, chunk: int, fmt: str) -> None:
    """Reading every unit of ``plan`` gives each item once, in order, with its offsets."""
    expected = reference_lines(data, fmt)
    seen: list[Line] = []
    for unit in plan:
        extent = plan.extent(unit.unit_id)
        lines = anyio.run(unit_lines, path, unit.start, extent.end, chunk, fmt)
        assert unit.first_index == len(seen), (unit, len(seen))
        assert len(lines) == extent.end_index - unit.first_index, (unit, lines)
        seen += lines
    assert seen == expected


def assert_index_true(index: LineIndex, data: bytes, fmt: str) -> None:
    lines = reference_lines(data, fmt)
    ends = (end for _, _, end, _ in reference_pieces(data, fmt))
    boundaries = {0, len(BOM) if data.startswith(BOM) else 0, *ends}
    for offset, item in zip(index.offsets, index.indexes, strict=True):
        assert offset in boundaries, offset
        assert item == sum(1 for start, _, _ in lines if start < offset), (offset, item)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=CONTENT, workers=st.integers(1, 8), chunk=st.integers(1, 16), gap=st.integers(1, 9),
    more=st.integers(0, 12), fmt=st.sampled_from(["text", "text", "jsonl"]),
)  # fmt: skip
def test_units_partition_the_items_before_and_after_recuts(
    data: bytes, workers: int, chunk: int, gap: int, more: int, fmt: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    path = tmp_path / "input.txt"
    path.write_bytes(data)
    monkeypatch.setattr(planning, "MIN_INDEX_GAP", gap)  # a dense index: cuts everywhere
    monkeypatch.setattr(units, "MIN_SPLIT_ITEMS", 2)  # and units of a few items split
    planned = planning.plan(path, workers, fmt)
    assert planned.total_items == len(reference_lines(data, fmt))
    assert_index_true(planned.index, data, fmt)
    plan = Plan(planned.units, len(data), planned.total_items)
    assert plan.units[0].start == 0
    assert_partition(plan, path, data, chunk, fmt)
    resume_at = {u.unit_id: Place(u.start, u.first_index) for u in plan}
    recut_plan = recut(plan, planned.index, resume_at, len(plan) + more)
    if more and gap == 1 and planned.total_items >= 2 * len(plan) + 2:
        assert len(recut_plan) > len(plan), "a re-cut that could cut did not"
    assert_partition(recut_plan, path, data, chunk, fmt)


@settings(max_examples=300, deadline=None)
@given(data=CONTENT)
def test_text_items_are_the_older_tools_lines(data: bytes) -> None:
    """For UTF-8 input, the items are ``splitlines()`` + ``strip()`` of the decoded file."""
    try:
        older = [s.strip() for s in data.decode("utf-8-sig").splitlines() if s.strip()]
    except UnicodeDecodeError:
        return
    read = [raw.decode("utf-8").strip() for _, raw, _ in reference_lines(data, "text")]
    assert read == older
    _, raws, _ = items_for("text").split(data.removeprefix(BOM), 0)
    assert [raw.decode("utf-8").strip() for raw in raws] == older


@settings(max_examples=200, deadline=None)
@given(data=CONTENT, step=st.integers(1, 16), fmt=st.sampled_from(["text", "jsonl"]))
def test_a_retry_reads_back_the_item_at_its_offset(
    data: bytes, step: int, fmt: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``--retry-failed`` re-reads an item from its offset alone: the same bytes as the run."""
    path = tmp_path_factory.mktemp("retry") / "input.txt"
    path.write_bytes(data)
    empty = path.with_name("failed.jsonl")
    empty.write_bytes(b"")
    reader = LetterReader(empty, 0, 0, path, len(data), fmt)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(retry_run, "LINE_STEP", step)
            for start, raw, _ in reference_lines(data, fmt):
                assert reader._line_at(start) == raw, (start, raw)
    finally:
        reader.close()


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
