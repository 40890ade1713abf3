"""A unit's durable state: append-only segments and a two-slot atomic checkpoint.

The commit order is the whole protocol: segment bytes are written and fsynced, then the
checkpoint that points at them is written to a temporary file, fsynced, renamed over the
older of two slots and the directory fsynced. Generation ``g`` lives in slot ``g % 2``,
so the previous generation survives any damage to the newest one and costs one batch.
All methods block; the worker calls them from a thread, one call per commit.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .._errors import CorruptCheckpointError
from .faults import crashpoint
from .records import SegmentRef, UnitCheckpoint

SLOTS = ("a", "b")
NO_CHECKPOINT = (
    "its segments hold data but no checkpoint names them (it crashed before its first "
    "commit, or its checkpoint files were removed)"
)
READ_CHUNK = 1 << 20


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def atomic_write(path: Path, data: bytes, point: str = "record") -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old file or the new one."""
    # A name of its own per write: two writers (a stale attempt) never share a temp file.
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    crashpoint(f"write_{point}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    crashpoint(f"before_rename_{point}")
    os.replace(tmp, path)
    crashpoint(f"after_rename_{point}")
    fsync_dir(path.parent)


@dataclass(frozen=True, slots=True)
class Loaded:
    """The newest provably good checkpoint of a unit, and what was skipped to find it."""

    checkpoint: UnitCheckpoint | None
    problems: tuple[str, ...]


class UnitStore:
    """Files of one unit inside a run directory."""

    def __init__(self, run_dir: Path, unit_id: int) -> None:
        self.unit_id = unit_id
        self.checkpoints_dir = run_dir / "units"
        self.segments_dir = run_dir / "segments"
        self._fds: dict[str, int] = {}
        self._unsynced_dir = False

    def slot_path(self, generation: int) -> Path:
        return self.checkpoints_dir / f"{self.unit_id:04d}.{SLOTS[generation % 2]}.ckpt"

    def segment_path(self, name: str) -> Path:
        return self.segments_dir / name

    # -- loading ---------------------------------------------------------------------

    def load(self, start: int = 0, end: int | None = None) -> Loaded:
        """Return the newest slot that parses, verifies and fits the unit's ``[start, end]``.

        A checkpoint past ``end`` comes from an attempt that did not know the unit was
        split (a stale attempt still running): it is refused, never merged.
        """
        good: list[UnitCheckpoint] = []
        problems: list[str] = []
        for slot in SLOTS:
            path = self.checkpoints_dir / f"{self.unit_id:04d}.{slot}.ckpt"
            try:
                checkpoint = self._read_slot(path, start, end)
            except CorruptCheckpointError as exc:
                problems.append(str(exc))
                continue
            if checkpoint is not None:
                good.append(checkpoint)
        if not good and not problems and self._has_segments():
            problems.append(NO_CHECKPOINT)
        good.sort(key=lambda c: c.generation, reverse=True)
        for position, checkpoint in enumerate(good):
            if position:
                problems.append(f"used older generation {checkpoint.generation}")
            return Loaded(checkpoint, tuple(problems))
        return Loaded(None, tuple(problems))

    def _has_segments(self) -> bool:
        """Whether an earlier attempt wrote bytes that no checkpoint points at."""
        if not self.segments_dir.is_dir():
            return False
        return any(p.stat().st_size for p in self.segments_dir.glob(f"{self.unit_id:04d}.*"))

    def _read_slot(self, path: Path, start: int, end: int | None) -> UnitCheckpoint | None:
        what = f"unit {self.unit_id} checkpoint {path.name}"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CorruptCheckpointError(f"{what} cannot be read: {exc.strerror}") from exc
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
                size = self.segment_path(ref.name).stat().st_size
            except OSError:
                raise CorruptCheckpointError(f"{what}: segment {ref.name} is missing") from None
            if size < ref.length:
                raise CorruptCheckpointError(
                    f"{what}: segment {ref.name} holds {size} bytes, checkpoint says {ref.length}"
                )

    # -- writing ---------------------------------------------------------------------

    def open_segment(self, name: str) -> None:
        """Create a fresh segment for this attempt; a name is never reused."""
        self.segments_dir.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
        self._fds[name] = os.open(self.segment_path(name), flags, 0o644)
        self._unsynced_dir = True

    def commit(self, data: dict[str, bytes], checkpoint: UnitCheckpoint) -> None:
        """Make ``data`` durable in its segments, then point the checkpoint at it."""
        for name, payload in data.items():
            if payload:
                crashpoint("segment_write")
                write_all(self._fds[name], payload)
                os.fsync(self._fds[name])
        if self._unsynced_dir:
            fsync_dir(self.segments_dir)
            self._unsynced_dir = False
        crashpoint("after_data_fsync")
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.slot_path(checkpoint.generation), checkpoint.to_bytes(), "checkpoint")

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def read_committed(self, ref: SegmentRef) -> Iterator[bytes]:
        """Yield the committed bytes of a segment, never what lies past them."""
        remaining = ref.length
        with self.segment_path(ref.name).open("rb") as fh:
            while remaining > 0:
                chunk = fh.read(min(READ_CHUNK, remaining))
                if not chunk:
                    raise CorruptCheckpointError(
                        f"unit {self.unit_id}: segment {ref.name} ended early"
                    )
                remaining -= len(chunk)
                yield chunk
