"""The one segment writer every backend hands out; a backend only supplies its sink.

The rules of :class:`~.protocol.Segment` live here once: an empty append does nothing,
a failed append or sync leaves the segment *broken* (how much reached the disk is
unknown, and a retried fsync may lie), a closed or broken segment refuses more writes,
and closing twice is fine. A backend says only how bytes go down (a file, part objects,
memory) through a small :class:`SegmentSink`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .faults import crashpoint
from .protocol import Segment, SegmentState, refuse_unless_open


class SegmentSink(Protocol):
    """Where one segment's bytes go: the backend's part of a segment writer."""

    def write(self, data: bytes) -> None:
        """Add non-empty ``data`` at the end (durable or not, as the backend does)."""
        ...

    def flush(self) -> None:
        """Make everything written so far durable, the segment's name included."""
        ...

    def release(self) -> None:
        """Free what the sink holds (file descriptors); called once."""
        ...


class SegmentWriter:
    """A segment being written through a backend's sink, with the shared lifecycle."""

    __slots__ = ("_name", "_sink", "_state")

    def __init__(self, name: str, sink: SegmentSink) -> None:
        self._name, self._sink = name, sink
        self._state = SegmentState.OPEN

    @property
    def name(self) -> str:
        """The segment's name inside the storage root."""
        return self._name

    def append(self, data: bytes) -> None:
        """Write ``data`` at the end (not durable until :meth:`sync`); empty does nothing."""
        refuse_unless_open(self._name, self._state)
        if data:
            self._guard(lambda: self._write(data))

    def _write(self, data: bytes) -> None:
        crashpoint("segment_write")
        self._sink.write(data)

    def sync(self) -> None:
        """Everything appended so far, and the name, survive a crash once this returns."""
        refuse_unless_open(self._name, self._state)
        self._guard(self._sink.flush)

    def close(self) -> None:
        """Release the writer; closing twice is fine. Unsynced bytes may be lost."""
        if self._state is SegmentState.CLOSED:
            return
        self._state = SegmentState.CLOSED
        self._sink.release()

    def _guard(self, call: Callable[[], None]) -> None:
        """A failed append or sync leaves the segment broken, as on a real disk."""
        try:
            call()
        except BaseException:
            self._state = SegmentState.BROKEN
            raise

    def __repr__(self) -> str:
        return f"SegmentWriter({self._name!r}, {self._state})"


if TYPE_CHECKING:  # mypy proves that the writer keeps the protocol
    _segment: type[Segment] = SegmentWriter
