"""Storage in memory, with the faults a commit protocol must survive, made deterministic.

:class:`MemoryStorage` keeps the protocol's promises (the contract tests run against it
and :class:`~.localfs.LocalStorage` alike) and adds tools for testing the engine without
processes or sleeps:

* :meth:`MemoryStorage.crashed` is a power cut: a new storage holding only what was
  durable (each segment's synced prefix, every record put or created), optionally with
  torn segment tails;
* :meth:`MemoryStorage.fail_next` makes the next matching call raise an ``OSError``
  (``ENOSPC``, ``EIO``...) before it changes anything;
* :meth:`MemoryStorage.hold` pauses the next matching call in its own thread, before its
  effect or just after it, until the test releases the :class:`Gate`;
* :meth:`MemoryStorage.journal` lists every change in order, so a test can check that
  data was synced before the checkpoint that names it was put.

The named crash points of :mod:`.faults` are for real processes; here they map onto
holds: ``segment_write`` is ``hold("append")``, ``write_X`` and ``before_rename_X`` are
``hold("put")``, ``after_rename_X`` is ``hold("put", after=True)``; then ``crashed()``.
"""

from __future__ import annotations

import errno
import os
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

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

GATE_TIMEOUT = 30.0  # a held call gives up (TimeoutError) rather than hang a test


class Op(StrEnum):
    """The calls a fault or a hold can be aimed at."""

    OPEN_SEGMENT = "open_segment"
    APPEND = "append"  # Segment.append
    SYNC = "sync"  # Segment.sync
    SEGMENT_SIZE = "segment_size"
    READ_SEGMENT = "read_segment"
    GET = "get"
    PUT = "put"
    CREATE = "create"
    DELETE = "delete"
    LIST = "list"
    REMOVE_TREE = "remove_tree"


@dataclass(frozen=True, slots=True)
class Event:
    """One change, as :meth:`MemoryStorage.journal` lists it."""

    op: Op
    name: str  # the name, or the prefix of remove_tree
    size: int  # bytes appended or written; for sync, the synced length


class Gate:
    """A one-shot pause: the storage call that meets it waits until :meth:`release`."""

    def __init__(self, timeout: float = GATE_TIMEOUT) -> None:
        self._reached = threading.Event()
        self._released = threading.Event()
        self._timeout = timeout

    @property
    def reached(self) -> bool:
        """Whether a call is held here (or was)."""
        return self._reached.is_set()

    def wait(self, timeout: float = GATE_TIMEOUT) -> None:
        """Block the test until a storage call is held at the gate."""
        if not self._reached.wait(timeout):
            raise TimeoutError(f"no storage call reached the gate within {timeout} s")

    def release(self) -> None:
        """Let the held call (or the next one to arrive) go on."""
        self._released.set()

    def hold(self) -> None:
        """Called by the storage, in the caller's thread: stop here until released."""
        self._reached.set()
        if not self._released.wait(self._timeout):
            raise TimeoutError(f"a held storage call was not released within {self._timeout} s")


class _Kind(StrEnum):
    ERROR = "error"  # raise before the effect
    BEFORE = "before"  # hold before the effect
    AFTER = "after"  # hold after the effect, before returning


@dataclass(frozen=True, slots=True)
class _Armed:
    op: Op
    prefix: str
    kind: _Kind
    gate: Gate | None = None
    error: OSError | None = None


class _File:
    """Bytes under one name; a record is a file whose bytes are all synced."""

    __slots__ = ("data", "durable", "synced")

    def __init__(self, data: bytes | bytearray, *, synced: int, durable: bool) -> None:
        self.data = bytearray(data)
        self.synced = synced  # bytes that survive a crash
        self.durable = durable  # whether the name survives a crash


def _injected(error: int | OSError, op: Op) -> OSError:
    if isinstance(error, OSError):
        return error
    return OSError(error, f"{os.strerror(error)} (injected at {op})")


class MemorySink:
    """A file's side of a :class:`~.segment.SegmentWriter`; faults and holds meet it here."""

    __slots__ = ("_file", "_name", "_storage")

    def __init__(self, storage: MemoryStorage, name: str, file: _File) -> None:
        self._storage, self._name, self._file = storage, name, file

    def write(self, data: bytes) -> None:
        """Add bytes, not yet durable."""
        self._storage._append(self._name, self._file, data)

    def flush(self) -> None:
        """Everything written so far survives a crash, and so does the name."""
        self._storage._sync(self._name, self._file)

    def release(self) -> None:
        """Nothing is held."""


class MemoryStorage:
    """Thread-safe storage in dictionaries, with crash, fault and pause tools."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, _File] = {}
        self._armed: list[_Armed] = []
        self._journal: list[Event] = []

    def __repr__(self) -> str:
        with self._lock:
            return f"MemoryStorage({len(self._files)} names)"

    # -- fault tools -----------------------------------------------------------------

    def fail_next(
        self, op: Op | str, error: int | OSError = errno.ENOSPC, *, prefix: str = ""
    ) -> None:
        """Make the next call of ``op`` on a name starting with ``prefix`` raise ``error``.

        Nothing is changed by the failing call. Each call of ``fail_next`` arms one
        failure; arm it twice to fail the next two calls.
        """
        op = Op(op)
        self._arm(_Armed(op, prefix, _Kind.ERROR, error=_injected(error, op)))

    def hold(self, op: Op | str, *, prefix: str = "", after: bool = False) -> Gate:
        """Pause the next call of ``op`` on a name starting with ``prefix``.

        Before its effect by default (a held ``put`` leaves the old record visible and
        durable), or with ``after=True`` once its effect is done and durable but before
        it returns. The caller's thread waits until :meth:`Gate.release`.
        """
        gate = Gate()
        self._arm(_Armed(Op(op), prefix, _Kind.AFTER if after else _Kind.BEFORE, gate=gate))
        return gate

    def crashed(self, torn: random.Random | None = None) -> MemoryStorage:
        """A new storage holding what a power cut now would leave.

        Records put or created, and each segment's synced prefix (a segment never
        synced is gone). With ``torn``, each segment also keeps a random part of its
        unsynced tail, and a never-synced one may survive: what a real disk may do.
        """
        survivor = MemoryStorage()
        with self._lock:
            for name, file in self._files.items():
                keep = _surviving(file, torn)
                if keep is not None:
                    survivor._files[name] = _File(file.data[:keep], synced=keep, durable=True)
        return survivor

    def journal(self) -> tuple[Event, ...]:
        """Every change so far, in order (reads are not listed)."""
        with self._lock:
            return tuple(self._journal)

    def synced_size(self, name: str) -> int | None:
        """How many bytes under ``name`` would survive a crash; None if the name would not."""
        with self._lock:
            file = self._files.get(check_name(name))
            return file.synced if file is not None and file.durable else None

    def _arm(self, armed: _Armed) -> None:
        with self._lock:
            self._armed.append(armed)

    def _enter(self, op: Op, name: str) -> Gate | None:
        """Meet what is armed for this call: hold, fail, or return a gate for afterwards."""
        with self._lock:
            picked = self._take(op, name)
        before, error, after = (picked.get(k) for k in (_Kind.BEFORE, _Kind.ERROR, _Kind.AFTER))
        if before is not None and before.gate is not None:
            before.gate.hold()
        if error is not None and error.error is not None:
            raise error.error
        return after.gate if after is not None else None

    def _take(self, op: Op, name: str) -> dict[_Kind, _Armed]:
        """Remove and return the first armed entry of each kind matching this call."""
        picked: dict[_Kind, _Armed] = {}
        for armed in list(self._armed):
            if armed.op is op and name.startswith(armed.prefix) and armed.kind not in picked:
                picked[armed.kind] = armed
                self._armed.remove(armed)
        return picked

    def _log(self, op: Op, name: str, size: int = 0) -> None:
        self._journal.append(Event(op, name, size))

    # -- name checks, as a file system would make them -------------------------------

    def _is_folder(self, name: str) -> bool:
        folder = name + "/"
        return any(other.startswith(folder) for other in self._files)

    def _check_path(self, name: str) -> None:
        """Refuse a name below a file, as a file system would."""
        parts = name.split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in self._files:
                raise NotADirectoryError(errno.ENOTDIR, "a file stands in its path", name)

    def _taken(self, name: str) -> bool:
        """Whether ``name`` exists, as a file or as a folder."""
        self._check_path(name)
        return name in self._files or self._is_folder(name)

    def _lookup(self, name: str) -> _File | None:
        """The file under ``name``; the errors a file system gives for folder clashes."""
        self._check_path(name)
        if self._is_folder(name):
            raise IsADirectoryError(errno.EISDIR, "is a folder, not a record or segment", name)
        return self._files.get(name)

    # -- segments --------------------------------------------------------------------

    def open_segment(self, name: str) -> SegmentWriter:
        """A new, empty segment; FileExistsError if the name exists (file or folder)."""
        after = self._enter(Op.OPEN_SEGMENT, check_name(name))
        with self._lock:
            if self._taken(name):
                raise FileExistsError(errno.EEXIST, "already exists", name)
            file = self._files[name] = _File(b"", synced=0, durable=False)
            self._log(Op.OPEN_SEGMENT, name)
        _release(after)
        return SegmentWriter(name, MemorySink(self, name, file))

    def _append(self, name: str, file: _File, data: bytes) -> None:
        after = self._enter(Op.APPEND, name)
        with self._lock:
            file.data += data
            self._log(Op.APPEND, name, len(data))
        _release(after)

    def _sync(self, name: str, file: _File) -> None:
        after = self._enter(Op.SYNC, name)
        with self._lock:
            file.synced = len(file.data)
            file.durable = True
            self._log(Op.SYNC, name, file.synced)
        _release(after)

    def segment_size(self, name: str) -> int | None:
        """Bytes appended under ``name`` (synced or not), None if it is missing."""
        after = self._enter(Op.SEGMENT_SIZE, check_name(name))
        with self._lock:
            file = self._lookup(name)
            size = None if file is None else len(file.data)
        _release(after)
        return size

    def read_segment(self, name: str, start: int, length: int) -> Iterator[bytes]:
        """Exactly ``[start, start + length)``; ShortSegmentError now if it is not there."""
        check_range(start, length)
        after = self._enter(Op.READ_SEGMENT, check_name(name))
        with self._lock:
            file = self._lookup(name)
            have = 0 if file is None else len(file.data)
        if have < start + length:
            raise ShortSegmentError(name, have, start + length)
        _release(after)
        return self._chunks(file, start, start + length)

    def _chunks(self, file: _File | None, pos: int, end: int) -> Iterator[bytes]:
        while file is not None and pos < end:
            with self._lock:
                chunk = bytes(file.data[pos : min(end, pos + READ_CHUNK)])
            pos += len(chunk)
            yield chunk

    # -- records ---------------------------------------------------------------------

    def get(self, name: str) -> bytes | None:
        """A copy of the bytes under ``name``, None if it is missing."""
        after = self._enter(Op.GET, check_name(name))
        with self._lock:
            file = self._lookup(name)
            data = None if file is None else bytes(file.data)
        _release(after)
        return data

    def put(self, name: str, data: bytes, *, point: str = "record") -> None:
        """Replace the record in one step; it is durable at once (``point`` is unused)."""
        del point  # the named crash points are for real processes; see hold()
        after = self._enter(Op.PUT, check_name(name))
        with self._lock:
            self._lookup(name)
            self._files[name] = _File(data, synced=len(data), durable=True)
            self._log(Op.PUT, name, len(data))
        _release(after)

    def create(self, name: str, data: bytes) -> bool:
        """Write the record once; False if the name exists (file or folder)."""
        after = self._enter(Op.CREATE, check_name(name))
        with self._lock:
            created = not self._taken(name)
            if created:
                self._files[name] = _File(data, synced=len(data), durable=True)
                self._log(Op.CREATE, name, len(data))
        _release(after)
        return created

    def delete(self, name: str) -> None:
        """Forget the name, durably; an open writer goes on into a detached file."""
        after = self._enter(Op.DELETE, check_name(name))
        with self._lock:
            if self._lookup(name) is not None:
                del self._files[name]
                self._log(Op.DELETE, name)
        _release(after)

    # -- folders ---------------------------------------------------------------------

    def list(self, prefix: str) -> list[str]:
        """Every name starting with ``prefix``, sorted."""
        split_prefix(prefix)
        after = self._enter(Op.LIST, prefix)
        with self._lock:
            names = sorted(name for name in self._files if name.startswith(prefix))
        _release(after)
        return names

    def remove_tree(self, prefix: str) -> None:
        """Forget every name under the folder, durably."""
        folder = check_folder(prefix) + "/"
        after = self._enter(Op.REMOVE_TREE, prefix)
        with self._lock:
            for name in [n for n in self._files if n.startswith(folder)]:
                del self._files[name]
            self._log(Op.REMOVE_TREE, prefix)
        _release(after)


def _release(after: Gate | None) -> None:
    """Hold a call whose effect is done, if a test asked to."""
    if after is not None:
        after.hold()


def _surviving(file: _File, torn: random.Random | None) -> int | None:
    """How many bytes of a file a crash keeps; None if the name itself is lost."""
    if torn is None:
        return file.synced if file.durable else None
    if not file.durable and torn.random() < 0.5:
        return None
    return torn.randint(file.synced, len(file.data))


if TYPE_CHECKING:  # mypy proves that the classes keep the protocols
    _storage: type[Storage] = MemoryStorage
    _sink: type[SegmentSink] = MemorySink
