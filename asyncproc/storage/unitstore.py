"""A unit's durable state on a :class:`Storage`: append-only segments, a two-slot checkpoint.

The commit order is the whole protocol: segment bytes are appended and synced, then the
checkpoint that points at them replaces the older of two slots atomically. Generation
``g`` lives in slot ``g % 2``, so the previous generation survives any damage to the
newest one and costs one batch. All methods block; a unit calls them from a thread,
one call per commit.

Each segment named by a checkpoint carries the CRC-32 of its committed bytes, kept
up to date as they are appended (``zlib.crc32`` over each batch, nothing read back).
Loading reads every committed byte once to check it, so a changed byte, or an object
store's missing part, is damage like a torn checkpoint: the older generation, or the
unit's start, is used instead.

::

    units/0003.a.ckpt, units/0003.b.ckpt     UnitCheckpoint, even and odd generations
    segments/0003.<attempt>.out|.dead        the unit's committed bytes, per attempt
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace

from .._errors import CorruptCheckpointError
from .faults import crashpoint
from .protocol import Segment, Storage
from .records import SegmentRef, UnitCheckpoint

SLOTS = ("a", "b")
CHECKPOINTS, SEGMENTS = "units/", "segments/"
NO_CHECKPOINT = (
    "its segments hold data but no checkpoint names them (it crashed before its first "
    "commit, or its checkpoint files were removed)"
)


@dataclass(frozen=True, slots=True)
class Loaded:
    """The newest provably good checkpoint of a unit, and what was skipped to find it."""

    checkpoint: UnitCheckpoint | None
    problems: tuple[str, ...]


def crc_of(chunks: Iterator[bytes]) -> int:
    """The CRC-32 of a stream of bytes."""
    crc = 0
    for chunk in chunks:
        crc = zlib.crc32(chunk, crc)
    return crc


class UnitStore:
    """One unit's segments and checkpoint slots in a run's storage."""

    def __init__(self, storage: Storage, unit_id: int) -> None:
        self.storage = storage
        self.unit_id = unit_id
        self._segments: dict[str, Segment] = {}
        self._written: dict[str, SegmentRef] = {}  # length and CRC of what was appended

    def slot_name(self, generation: int) -> str:
        return f"{CHECKPOINTS}{self.unit_id:04d}.{SLOTS[generation % 2]}.ckpt"

    # -- loading ---------------------------------------------------------------------

    def load(self, start: int = 0, end: int | None = None, *, check_bytes: bool = True) -> Loaded:
        """The newest slot that parses, verifies and fits the unit's ``[start, end]``.

        A checkpoint past ``end`` comes from an attempt that did not know the unit was
        split (a stale attempt still running): it is refused, never merged. With
        ``check_bytes`` (not for a mere view) the committed bytes of the chosen slot's
        segments are read to check their CRC; the older slot is read only if that fails.
        """
        good: list[UnitCheckpoint] = []
        problems: list[str] = []
        for generation in (0, 1):
            try:
                checkpoint = self._read_slot(self.slot_name(generation), start, end)
            except CorruptCheckpointError as exc:
                problems.append(str(exc))
                continue
            if checkpoint is not None:
                good.append(checkpoint)
        if not good and not problems and self._has_segments():
            problems.append(NO_CHECKPOINT)
        good.sort(key=lambda c: c.generation, reverse=True)
        if check_bytes:
            good = self._first_intact(good, problems)
        if len(good) == 2 or not good:
            return Loaded(good[0] if good else None, tuple(problems))
        if problems:
            problems.append(f"used older generation {good[0].generation}")
        return Loaded(good[0], tuple(problems))

    def _first_intact(
        self, newest_first: list[UnitCheckpoint], problems: list[str]
    ) -> list[UnitCheckpoint]:
        """From the newest on, drop checkpoints whose segments fail their CRC."""
        for position, checkpoint in enumerate(newest_first):
            what = self._what(self.slot_name(checkpoint.generation))
            try:
                self.check_bytes(checkpoint, what)
            except CorruptCheckpointError as exc:
                problems.append(str(exc))
                continue
            return newest_first[position:]
        return []

    def check_bytes(self, checkpoint: UnitCheckpoint, what: str) -> None:
        """Read each segment's committed bytes and compare their CRC with the record's."""
        for ref in (*checkpoint.segments, *checkpoint.dead_segments):
            if ref.crc is None:
                continue  # named by a schema-2 checkpoint: trusted by length, as then
            try:
                crc = crc_of(self.read_committed(ref))
            except OSError as exc:
                raise CorruptCheckpointError(
                    f"{what}: segment {ref.name} cannot be read: {exc.strerror}"
                ) from exc
            if crc != ref.crc:
                raise CorruptCheckpointError(
                    f"{what}: segment {ref.name} fails its CRC (its committed bytes changed)"
                )

    def _has_segments(self) -> bool:
        """Whether an earlier attempt wrote bytes that no checkpoint points at."""
        mine = f"{SEGMENTS}{self.unit_id:04d}."
        return any(
            (self.storage.segment_size(name) or 0) > 0
            for name in self.storage.list(SEGMENTS)
            if name.startswith(mine)
        )

    def _what(self, slot: str) -> str:
        return f"unit {self.unit_id} checkpoint {slot.rpartition('/')[2]}"

    def _read_slot(self, name: str, start: int, end: int | None) -> UnitCheckpoint | None:
        what = self._what(name)
        try:
            raw = self.storage.get(name)
        except OSError as exc:
            raise CorruptCheckpointError(f"{what} cannot be read: {exc.strerror}") from exc
        if raw is None:
            return None
        checkpoint = UnitCheckpoint.from_bytes(raw, what)
        if checkpoint.unit_id != self.unit_id:
            raise CorruptCheckpointError(f"{what} belongs to unit {checkpoint.unit_id}")
        if checkpoint.offset < start or (end is not None and checkpoint.offset > end):
            raise CorruptCheckpointError(
                f"{what} is at byte {checkpoint.offset}, outside the unit's [{start}, {end}] "
                "(written by an attempt that did not know of a split)"
            )
        self._verify_segments(checkpoint, what)
        return checkpoint

    def _verify_segments(self, checkpoint: UnitCheckpoint, what: str) -> None:
        for ref in (*checkpoint.segments, *checkpoint.dead_segments):
            try:
                size = self.storage.segment_size(SEGMENTS + ref.name)
            except OSError as exc:
                raise CorruptCheckpointError(
                    f"{what}: segment {ref.name} cannot be read: {exc.strerror}"
                ) from exc
            if size is None and ref.length == 0:
                continue  # nothing committed to it: never synced, so a crash may drop its name
            if size is None:
                raise CorruptCheckpointError(f"{what}: segment {ref.name} is missing")
            if size < ref.length:
                raise CorruptCheckpointError(
                    f"{what}: segment {ref.name} holds {size} bytes, checkpoint says {ref.length}"
                )

    # -- writing ---------------------------------------------------------------------

    def open_segment(self, name: str) -> None:
        """Create a fresh segment for this attempt; a name is never reused."""
        self._segments[name] = self.storage.open_segment(SEGMENTS + name)
        self._written[name] = SegmentRef(name, 0, 0)

    def commit(self, data: dict[str, bytes], checkpoint: UnitCheckpoint) -> UnitCheckpoint:
        """Make ``data`` durable in its segments, then point the checkpoint at it.

        Returns the checkpoint as written: with the CRC of each of this store's segments.
        """
        written = self._append(data)
        for name in written:
            self._segments[name].sync()
        crashpoint("after_data_fsync")
        checkpoint = self.with_crcs(checkpoint)
        self.storage.put(self.slot_name(checkpoint.generation), checkpoint.to_bytes(),
                         point="checkpoint")  # fmt: skip
        return checkpoint

    def _append(self, data: dict[str, bytes]) -> list[str]:
        """Append each non-empty payload, keeping its segment's length and CRC."""
        written = [name for name, payload in data.items() if payload]
        for name in written:
            self._segments[name].append(data[name])
            was = self._written[name]
            self._written[name] = SegmentRef(
                name, was.length + len(data[name]), zlib.crc32(data[name], was.crc or 0)
            )
        return written

    def with_crcs(self, checkpoint: UnitCheckpoint) -> UnitCheckpoint:
        """The checkpoint with the CRC of every segment this store appended to.

        A length that differs from what was appended gets no CRC rather than a wrong one.
        """

        def stamped(ref: SegmentRef) -> SegmentRef:
            mine = self._written.get(ref.name)
            if mine is None:
                return ref  # an earlier attempt's segment: its CRC stays as loaded
            return replace(ref, crc=mine.crc if mine.length == ref.length else None)

        return replace(
            checkpoint,
            segments=tuple(map(stamped, checkpoint.segments)),
            dead_segments=tuple(map(stamped, checkpoint.dead_segments)),
        )

    def close(self) -> None:
        for segment in self._segments.values():
            segment.close()
        self._segments.clear()

    def read_committed(self, ref: SegmentRef) -> Iterator[bytes]:
        """Yield the committed bytes of a segment, never what lies past them."""
        yield from self.storage.read_segment(SEGMENTS + ref.name, 0, ref.length)


class VolatileUnitStore(UnitStore):
    """``--no-checkpoint``: segment bytes without syncs, and no checkpoint at all.

    The coordinator still merges from the checkpoints it holds in memory, so a run that
    finishes gives the same output; a run that crashes left nothing to resume from, and
    a resume starts every unit again from its beginning.
    """

    def commit(self, data: dict[str, bytes], checkpoint: UnitCheckpoint) -> UnitCheckpoint:
        """Append without syncing; the checkpoint is kept in memory by the coordinator only."""
        self._append(data)
        return self.with_crcs(checkpoint)
