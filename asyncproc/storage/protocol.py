"""The storage seam: exactly the operations the commit protocol needs, and no more.

The engine is handed a :class:`Storage` instead of choosing one, so local files
(:mod:`.localfs`), memory with fault tools (:mod:`.memory`) and, later, an object store
fit behind the same few calls. Everything in a run lives under one storage root and is
named by a relative, ``/``-separated *name* such as ``segments/0003.002-9f3c1a.out``,
``units/0003.a.ckpt`` or ``manifest.json``.

Two kinds of data, two kinds of call:

* a **segment** is an append-only byte stream with one writer; appended bytes count only
  once :meth:`Segment.sync` returned, and a checkpoint only ever names a synced length;
* a **record** is a whole small object, replaced atomically by :meth:`Storage.put` (a
  reader sees the old bytes or the new, never a mix) or created once by
  :meth:`Storage.create`.

Every call that changes anything is durable when it returns, except
:meth:`Segment.append`. Names are checked here, once: an absolute name, an empty part,
``.``, ``..``, or a part starting with ``.`` or ending in ``.tmp`` (reserved for temporary
files) is refused with ``ValueError``, so no name can reach outside the root or collide
with a temporary file.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from typing import Protocol

from .._errors import CorruptCheckpointError

READ_CHUNK = 1 << 18  # most bytes read_segment yields at once (256 KiB)
TEMP_SUFFIX = ".tmp"  # temporary files end so (and start with '.'); never a name


class ShortSegmentError(CorruptCheckpointError):
    """A segment holds fewer bytes than a checkpoint says were committed to it."""

    def __init__(self, name: str, have: int, want: int) -> None:
        super().__init__(f"segment {name} holds {have} bytes, fewer than the {want} expected")
        self.name = name
        self.have = have
        self.want = want


class Segment(Protocol):
    """An append-only byte stream with one writer.

    After an append or a sync fails, the segment refuses further appends and syncs: how
    much of it reached the disk is unknown (and a retried fsync may lie), so the writer
    must start a new segment rather than go on with this one.
    """

    @property
    def name(self) -> str:
        """The segment's name inside the storage root."""
        ...

    def append(self, data: bytes) -> None:
        """Add ``data`` at the end; not durable until :meth:`sync` returns."""
        ...

    def sync(self) -> None:
        """Make everything appended so far durable, name included, before returning."""
        ...

    def close(self) -> None:
        """Release the writer; closing twice is fine. Unsynced bytes may be lost."""
        ...


class Storage(Protocol):
    """One run's storage root: segments and records, named relative to the root."""

    def open_segment(self, name: str) -> Segment:
        """Create a new, empty segment; ``FileExistsError`` if the name exists."""
        ...

    def segment_size(self, name: str) -> int | None:
        """Bytes stored under ``name`` (synced or not), or None if it is missing."""
        ...

    def read_segment(self, name: str, start: int, length: int) -> Iterator[bytes]:
        """Yield exactly bytes ``[start, start + length)`` in chunks of at most ``READ_CHUNK``.

        Raises :class:`ShortSegmentError` at the call, before any byte is yielded, if
        fewer bytes are stored (a missing segment holds none).
        """
        ...

    def get(self, name: str) -> bytes | None:
        """A whole record, or None if it is missing."""
        ...

    def put(self, name: str, data: bytes, *, point: str = "record") -> None:
        """Replace a record atomically and durably: readers see old or new, never a mix.

        ``point`` names the crash points passed on the way (see :mod:`.faults`):
        ``write_{point}`` before anything is written, ``before_rename_{point}`` when the
        new bytes are durable but not yet visible, ``after_rename_{point}`` when they are
        visible but not yet known to be durable.
        """
        ...

    def create(self, name: str, data: bytes) -> bool:
        """Write a record once, durably; False (and nothing written) if the name exists."""
        ...

    def delete(self, name: str) -> None:
        """Remove a record or segment, durably; a missing name is fine."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Every name starting with ``prefix``, sorted; ``'segments/'`` lists that folder.

        Nested folders are listed too (names are full names, as for an object store's
        prefix listing); temporary files never are.
        """
        ...

    def remove_tree(self, prefix: str) -> None:
        """Remove everything under a folder prefix (non-empty, ending in ``/``), durably."""
        ...


class SegmentState(StrEnum):
    """Lifecycle of a segment writer."""

    OPEN = "open"  # takes appends and syncs
    BROKEN = "broken"  # an append or sync failed: its stored length is unknown
    CLOSED = "closed"  # closed by its writer


def refuse_unless_open(name: str, state: SegmentState) -> None:
    """Stop a writer from going on with a segment it closed or that failed under it."""
    if state is SegmentState.CLOSED:
        raise ValueError(f"segment {name} is closed; open a new segment to write more")
    if state is SegmentState.BROKEN:
        raise OSError(
            f"segment {name} failed earlier and its stored length is unknown; "
            "open a new segment to write more"
        )


def _check_part(part: str, name: str) -> None:
    if not part:
        raise ValueError(f"storage name {name!r} has an empty part (leading, trailing or //)")
    if part in (".", ".."):
        raise ValueError(f"storage name {name!r} may not contain {part!r}")
    if part.startswith(".") or part.endswith(TEMP_SUFFIX):
        raise ValueError(
            f"storage name {name!r}: parts starting with '.' or ending in {TEMP_SUFFIX} "
            "are reserved for temporary files"
        )


def check_name(name: str) -> str:
    """Return ``name`` if it is a safe relative name inside the root, else ValueError.

    This is the one gate between a name (which may come from a record on untrusted
    ground) and the file system, so nothing can point outside the root.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"storage name must be a non-empty string, got {name!r}")
    if name.startswith("/"):
        raise ValueError(f"storage name {name!r} is absolute; names are relative to the root")
    if "\0" in name:
        raise ValueError(f"storage name {name!r} contains a NUL byte")
    for part in name.split("/"):
        _check_part(part, name)
    return name


def split_prefix(prefix: str) -> tuple[str, str]:
    """Split a listing prefix into its folder (``''`` or ending in ``/``) and a name start.

    The folder must be a valid name; the start may be any beginning of a name.
    """
    if not isinstance(prefix, str) or "\0" in prefix:
        raise ValueError(f"storage prefix must be a string without NUL, got {prefix!r}")
    folder, slash, start = prefix.rpartition("/")
    if slash:
        check_name(folder)
    return folder + slash, start


def check_folder(prefix: str) -> str:
    """The folder of a ``remove_tree`` or ``make_folder`` prefix: non-empty, ending in ``/``."""
    folder, start = split_prefix(prefix)
    if not folder or start:
        raise ValueError(f"a folder prefix must be non-empty and end in '/', got {prefix!r}")
    return folder[:-1]


def check_range(start: int, length: int) -> None:
    """Refuse a negative read range before it reaches a file."""
    if start < 0 or length < 0:
        raise ValueError(f"read range must be non-negative, got start={start} length={length}")
