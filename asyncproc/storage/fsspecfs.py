"""Any fsspec file system (S3, GCS, Azure, memory) behind the storage protocol.

An object store can neither append, truncate nor rename atomically, so nothing here
does: every write is one whole object, written once.

* a **record** is one object under its name, replaced by a whole-object PUT (atomic on
  S3, GCS and Azure: a reader sees the old object or the new one);
* a **segment** is a folder of immutable *part* objects, ``<name>/.part-00000000`` (an
  empty marker made when the segment is opened, exclusively) then one part per
  non-empty append (:class:`PartSink`). A commit appends once per segment, so a
  commit writes one object per segment it touches and one checkpoint PUT. Parts are
  durable when their PUT returns, so a sync has nothing left to do;
  a checkpoint names committed *lengths*, and parts past them are never read;
* :meth:`FsspecStorage.create` and each part use the store's exclusive creation
  (``mode="create"``: S3's ``If-None-Match: *``). A store that ignores it lets two
  creators both win; the engine only creates names unique to one attempt, and the run
  lock (:mod:`asyncproc.runs.lease`) documents what it then relies on.

Part names start with ``.``, which no storage name may (:func:`.protocol.check_name`),
so a record can never collide with a part. Listings are never cached: another process
(a stale attempt, a resumed run) may have written since. Each instance remembers the
names it has already checked to be records or folders, so a checkpoint PUT costs one
request after the first. All calls block; the engine calls them from worker threads.
"""

from __future__ import annotations

import contextlib
import errno
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .faults import crashpoint
from .protocol import (
    READ_CHUNK,
    ShortSegmentError,
    Storage,
    check_folder,
    check_name,
    check_range,
    split_prefix,
)
from .segment import SegmentSink, SegmentWriter

PART = ".part-"
PREFETCH = 16  # ranged GETs in flight while a segment is read (the merge)
_PART_NAME = re.compile(r"^\.part-(\d{8})$")


def part_name(seq: int) -> str:
    return f"{PART}{seq:08d}"


class PartSink:
    """A segment's side of a :class:`~.segment.SegmentWriter`: each write is one new part."""

    __slots__ = ("_name", "_next", "_storage")

    def __init__(self, storage: FsspecStorage, name: str) -> None:
        self._storage, self._name = storage, name
        self._next = 1  # part 0 is the marker made at open

    def write(self, data: bytes) -> None:
        """PUT ``data`` as the next part; durable once this returns."""
        self._storage.write_part(self._name, self._next, data)
        self._next += 1

    def flush(self) -> None:
        """Nothing to do: each part was durable when its PUT returned."""

    def release(self) -> None:
        """Nothing is held between PUTs."""


class FsspecStorage:
    """A run's storage root at ``root`` (a path in ``fs``, without the protocol)."""

    def __init__(self, fs: Any, root: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self._records: set[str] = set()  # names known to be records
        self._folders: set[str] = set()  # names known to be folders

    def __repr__(self) -> str:
        return f"FsspecStorage({self.fs.protocol!r}, {self.root!r})"

    # -- keys ------------------------------------------------------------------------

    def _key(self, name: str) -> str:
        return f"{self.root}/{name}" if name else self.root

    def _relative(self, key: str) -> str:
        key = self.fs._strip_protocol(key).rstrip("/")
        root = self.fs._strip_protocol(self.root).rstrip("/")
        return key[len(root) + 1 :] if key.startswith(root + "/") else key

    def _scan(self, name: str) -> tuple[int | None, dict[str, int]]:
        """One listing: the size of a record at ``name`` (or None), and every object below
        it (relative to it) with its size. Never cached: others write too."""
        found = list_prefix(self.fs, self._key(name))
        lead = f"{name}/" if name else ""
        record, below = None, {}
        for found_key, info in found.items():
            relative = self._relative(found_key)
            size = int(info.get("size") or 0)
            if name and relative == name and info.get("type") != "directory":
                record = size
            elif relative.startswith(lead) and len(relative) > len(lead):
                below[relative[len(lead) :]] = size
        return record, below

    def _kind(self, name: str) -> tuple[str, dict[str, int]]:
        """('record' | 'segment' | 'folder' | 'missing', the objects below ``name``)."""
        record, below = self._scan(name)
        if below:
            parts = all(_PART_NAME.match(k) for k in below)
            return ("segment" if parts else "folder"), below
        return ("record" if record is not None else "missing"), below

    def _parts(self, name: str) -> list[tuple[str, int]] | None:
        """A segment's parts in order with their sizes; None if ``name`` is no segment."""
        kind, below = self._kind(name)
        if kind == "folder":
            raise IsADirectoryError(errno.EISDIR, "is a folder, not a record or segment", name)
        if kind != "segment":
            return None
        return sorted((f"{name}/{k}", size) for k, size in below.items())

    def _check_parents(self, name: str) -> None:
        """Refuse a name below a record or a segment, as a file system would."""
        parts = name.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in self._folders:
                continue
            if self._is_record_or_segment(parent):
                raise NotADirectoryError(errno.ENOTDIR, "a record stands in its path", name)
            self._folders.add(parent)

    def _is_record_or_segment(self, name: str) -> bool:
        """Two small listings, whatever lies below ``name``: the folder above it (one
        level, with a delimiter), then, if ``name`` is a folder there, its marker part."""
        above = name.rpartition("/")[0]
        self.fs.invalidate_cache()
        try:
            entries = self.fs.ls(self._key(above), detail=True)
        except FileNotFoundError:
            return False
        mine = [e for e in entries if self._relative(str(e["name"])) == name]
        if any(e.get("type") != "directory" for e in mine):
            return True
        if not mine:
            return False
        marker = self._key(f"{name}/{part_name(0)}")
        found = list_prefix(self.fs, marker)  # may hold siblings (fsspec-memory ignores prefix)
        return any(self._relative(str(k)) == f"{name}/{part_name(0)}" for k in found)

    def _write(self, name: str, data: bytes, *, exclusive: bool) -> bool:
        """One whole-object PUT; with ``exclusive``, False if the object exists."""
        key = self._key(name)
        if not exclusive:
            self.fs.pipe_file(key, data)
            return True
        try:
            self.fs.pipe_file(key, data, mode="create")
        except FileExistsError:
            return False
        except TypeError:  # an implementation without mode=: check, then write
            if self.fs.exists(key):
                return False
            self.fs.pipe_file(key, data)
        return True

    # -- segments --------------------------------------------------------------------

    def open_segment(self, name: str) -> SegmentWriter:
        """Create the segment's marker part exclusively; FileExistsError if the name exists."""
        check_name(name)
        self._check_parents(name)
        kind, _ = self._kind(name)
        if kind != "missing" or not self._write(f"{name}/{part_name(0)}", b"", exclusive=True):
            raise FileExistsError(errno.EEXIST, "already exists", name)
        return SegmentWriter(name, PartSink(self, name))

    def write_part(self, name: str, seq: int, data: bytes) -> None:
        """PUT one part of a segment, exclusively: parts are never overwritten."""
        if not self._write(f"{name}/{part_name(seq)}", data, exclusive=True):
            raise FileExistsError(errno.EEXIST, "part already exists", f"{name}/{part_name(seq)}")

    def segment_size(self, name: str) -> int | None:
        """Bytes in the segment's unbroken run of parts (a record's size for a record).

        A part missing from the middle (lost after a crash, or removed) ends the run:
        the parts after it do not count, so a checkpoint naming their bytes finds the
        segment short, which is damage, instead of reading later bytes in its place.
        """
        record, below = self._scan(check_name(name))
        if below and all(_PART_NAME.match(k) for k in below):
            return sum(size for _, size in in_sequence(name, below))
        return record

    def read_segment(self, name: str, start: int, length: int) -> Iterator[bytes]:
        """Exactly ``[start, start + length)`` across parts; ShortSegmentError now if short."""
        check_range(start, length)
        record, below = self._scan(check_name(name))
        if below and not all(_PART_NAME.match(k) for k in below):
            raise IsADirectoryError(errno.EISDIR, "is a folder, not a segment", name)
        parts = in_sequence(name, below)
        if not parts and record is not None:
            parts = [(name, record)]
        have = sum(size for _, size in parts)
        if have < start + length:
            raise ShortSegmentError(name, have, start + length)
        return self._chunks(parts, start, start + length)

    def _chunks(self, parts: list[tuple[str, int]], pos: int, end: int) -> Iterator[bytes]:
        """The range as ranged GETs of at most READ_CHUNK bytes, PREFETCH of them at once
        (``cat_ranges`` runs them concurrently on an async store such as S3)."""
        ranges: list[tuple[str, int, int]] = []
        base = 0
        for part, size in parts:
            low, high = max(pos, base), min(end, base + size)
            ranges.extend(
                (self._key(part), start - base, min(high, start + READ_CHUNK) - base)
                for start in range(low, high, READ_CHUNK)
            )
            base += size
            if base >= end:
                break
        for first in range(0, len(ranges), PREFETCH):
            batch = ranges[first : first + PREFETCH]
            paths, starts, ends = (list(column) for column in zip(*batch, strict=True))
            yield from self.fs.cat_ranges(paths, starts, ends, on_error="raise")

    # -- records ---------------------------------------------------------------------

    def get(self, name: str) -> bytes | None:
        """A whole record (or a segment's bytes); None if it is missing."""
        check_name(name)
        try:
            data: bytes = self.fs.cat_file(self._key(name))
            return data
        except (FileNotFoundError, IsADirectoryError):
            pass
        parts = self._parts(name)
        if parts is None:
            return None
        return b"".join(self.fs.cat_file(self._key(part)) for part, _ in parts)

    def put(self, name: str, data: bytes, *, point: str = "record") -> None:
        """One whole-object PUT: readers see the old object or the new one."""
        check_name(name)
        crashpoint(f"write_{point}")
        if name not in self._records:
            self._check_parents(name)
            kind, _ = self._kind(name)
            if kind in ("folder", "segment"):
                raise IsADirectoryError(errno.EISDIR, "is a folder, not a record", name)
        self._write(name, data, exclusive=False)
        self._records.add(name)

    def create(self, name: str, data: bytes) -> bool:
        """Write the record once, exclusively where the store supports it."""
        check_name(name)
        self._check_parents(name)
        kind, _ = self._kind(name)
        if kind != "missing":
            return False
        created = self._write(name, data, exclusive=True)
        if created:
            self._records.add(name)
        return created

    def delete(self, name: str) -> None:
        """Remove a record, or every part of a segment; a missing name is fine."""
        check_name(name)
        parts = self._parts(name)
        keys = [self._key(p) for p, _ in parts] if parts is not None else [self._key(name)]
        for key in keys:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(key)
        self._records.discard(name)

    # -- folders ---------------------------------------------------------------------

    def list(self, prefix: str) -> list[str]:
        """Every record and segment whose name starts with ``prefix``, sorted."""
        folder, start = split_prefix(prefix)
        names: set[str] = set()
        for relative in self._scan(folder[:-1])[1]:
            head, _, last = relative.rpartition("/")
            if _PART_NAME.match(last):
                relative = head
            if not relative or not relative.startswith(start) or _hidden(relative):
                continue
            names.add(folder + relative)
        return sorted(names)

    def remove_tree(self, prefix: str) -> None:
        """Remove every object under a folder prefix."""
        folder = check_folder(prefix)
        keys = [self._key(f"{folder}/{k}") for k in self._scan(folder)[1]]
        if keys:
            self.fs.rm(keys)
        self._records = {n for n in self._records if not n.startswith(folder + "/")}
        self._folders = {n for n in self._folders if n != folder and not n.startswith(folder + "/")}


def in_sequence(name: str, below: dict[str, int]) -> list[tuple[str, int]]:
    """A segment's parts from the marker on, in order, up to the first one missing."""
    parts = []
    for seq in range(len(below)):
        size = below.get(part_name(seq))
        if size is None:
            break
        parts.append((f"{name}/{part_name(seq)}", size))
    return parts


def list_prefix(fs: Any, key: str) -> dict[str, Any]:
    """Every object whose key is ``key`` or starts with ``key/`` (and some ``key...``
    siblings the caller filters out), in one listing request where the store allows:
    S3's ``find(parent, prefix=name)`` is one LIST, where ``find(key)`` is a LIST and a
    HEAD. Never cached: others write too."""
    fs.invalidate_cache()
    parent, _, base = key.rpartition("/")
    try:
        found: dict[str, Any] = (
            fs.find(parent, prefix=base, detail=True) if parent else fs.find(key, detail=True)
        )
    except FileNotFoundError:
        return {}
    return found


def _hidden(relative: str) -> bool:
    """A name no storage name can be (a stray temporary object): never listed."""
    try:
        check_name(relative)
    except ValueError:
        return True
    return False


if TYPE_CHECKING:  # mypy proves that the classes keep the protocols
    _storage: type[Storage] = FsspecStorage
    _sink: type[SegmentSink] = PartSink
