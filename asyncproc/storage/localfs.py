"""Local files behind the storage protocol, on untrusted ground.

The run directory may hold anything a user (or an attacker) planted there, so every path
is walked from the root one folder at a time with ``O_NOFOLLOW``: a symlink is never
followed where a file is created, replaced, deleted or read, and no name reaches outside
the root. The root itself is the caller's choice and may be a symlink.

Durability: a record is written to a temporary file (``.<name>.<random>.tmp``, created
``O_EXCL`` and owner-only), fsynced, renamed over the name and the folder fsynced; a
folder made on demand is made durable in its parent at once; a segment's name is made
durable by its first sync. A symlink planted at a record's name is replaced by the
record (rename acts on the link, never through it); one planted at a segment's name or
a created record's name makes ``open_segment`` / ``create`` refuse, as any existing name
does. All calls block; the engine calls them from worker threads.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from .faults import crashpoint
from .protocol import (
    READ_CHUNK,
    TEMP_SUFFIX,
    ShortSegmentError,
    Storage,
    check_folder,
    check_name,
    check_range,
    split_prefix,
)
from .segment import SegmentSink, SegmentWriter

FILE_MODE = 0o600  # checkpoint data is raw user data
DIR_MODE = 0o700
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK  # a planted FIFO must not block us
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
_SEGMENT = _NEW | os.O_APPEND
_NO_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP)  # link() refused by the fs


def write_all(fd: int, data: bytes) -> None:
    """Write every byte: ``os.write`` may write only part of what it is given."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written == 0:
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]


def named(exc: BaseException, where: str) -> BaseException:
    """An OSError that names the file it is about (``os.write`` names none), else ``exc``.

    A full disk must say which file it could not write. The errno, and so the class
    (``FileNotFoundError``...), is kept.
    """
    if not isinstance(exc, OSError) or exc.errno is None:
        return exc
    return OSError(exc.errno, exc.strerror, where)


def _split(name: str) -> tuple[list[str], str]:
    """A checked name as its folder parts and its last part."""
    *folder, base = check_name(name).split("/")
    return folder, base


def _not_followed(dir_fd: int, part: str, path: str, exc: OSError) -> OSError:
    """Say plainly that a symlink was refused; other errors pass through as they are."""
    try:
        is_link = stat.S_ISLNK(os.stat(part, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        is_link = False
    if not is_link:
        return exc
    return OSError(errno.ELOOP, "is a symbolic link; asyncproc never follows one", path)


def _require_regular(mode: int, name: str) -> None:
    """Refuse to treat a folder, a symlink, a FIFO or a device as a record or segment."""
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a record or segment", name)
    if not stat.S_ISREG(mode):
        raise OSError(errno.ELOOP, "is not a regular file; asyncproc never follows one", name)


def _discard(dir_fd: int, base: str) -> None:
    """Remove a temporary file after a failure, without hiding that failure."""
    with suppress(OSError):
        os.unlink(base, dir_fd=dir_fd)


def _write_new(dir_fd: int, base: str, data: bytes) -> None:
    """Create ``base`` owner-only and exclusively (never through a symlink), fsync it."""
    fd = os.open(base, _NEW, FILE_MODE, dir_fd=dir_fd)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        _discard(dir_fd, base)
        raise


def _publish_by_link(dir_fd: int, base: str, data: bytes) -> bool:
    """Write a temporary file, then link it under ``base``; False if the name is taken."""
    tmp = _temp_name(base)
    _write_new(dir_fd, tmp, data)
    try:
        os.link(tmp, base, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:
        return False
    finally:
        _discard(dir_fd, tmp)
    return True


def _create_in_place(dir_fd: int, base: str, data: bytes) -> bool:
    """``O_EXCL`` straight under the name, for file systems without hard links."""
    try:
        _write_new(dir_fd, base, data)
    except FileExistsError:
        return False
    return True


def _temp_name(base: str) -> str:
    """A name of its own per write: two writers (a stale attempt) never share one."""
    return f".{base}.{secrets.token_hex(8)}{TEMP_SUFFIX}"


def _hidden(entry: str) -> bool:
    """Temporary files, ours (``.x.tmp``) or an older engine's (``x.<hex>.tmp``)."""
    return entry.startswith(".") or entry.endswith(TEMP_SUFFIX)


class LocalSink:
    """A segment file's side of a :class:`~.segment.SegmentWriter`: ``flush`` is an fsync."""

    __slots__ = ("_dir_fd", "_fd", "_where")

    def __init__(self, fd: int, dir_fd: int, where: str) -> None:
        self._fd, self._where = fd, where
        self._dir_fd: int | None = dir_fd  # fsynced once, so the new name is durable

    def write(self, data: bytes) -> None:
        """Straight to the kernel; an error names the file."""
        try:
            write_all(self._fd, data)
        except OSError as exc:
            raise named(exc, self._where) from None

    def flush(self) -> None:
        """fsync the file, and its folder the first time so the name survives too."""
        try:
            os.fsync(self._fd)
            if self._dir_fd is not None:
                os.fsync(self._dir_fd)
                os.close(self._dir_fd)
                self._dir_fd = None
        except OSError as exc:
            raise named(exc, self._where) from None

    def release(self) -> None:
        os.close(self._fd)
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None


class LocalStorage:
    """A run's storage root on the local file system."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    # -- walking ---------------------------------------------------------------------

    def _open_root(self, create: bool) -> int:
        """The root folder as an fd; made (with its parents) if asked and missing.

        Every folder made here is owner-only, the parents too: a checkpoint directory
        removed while a run works comes back as private as it was made.
        """
        if create and not self.root.is_dir():
            for folder in (*reversed(self.root.parents), self.root):
                if not folder.is_dir():
                    folder.mkdir(mode=DIR_MODE, exist_ok=True)
        return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)

    def _step(self, parent: int, part: str, path: str, create: bool) -> int:
        """Open one folder below ``parent`` (closing it), never through a symlink."""
        try:
            try:
                return os.open(part, _DIR, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    raise
            try:
                os.mkdir(part, DIR_MODE, dir_fd=parent)
            except FileExistsError:
                pass  # made meanwhile by another writer
            else:
                os.fsync(parent)  # the new folder's entry is durable before anything in it
            return os.open(part, _DIR, dir_fd=parent)
        except NotADirectoryError as exc:
            raise _not_followed(parent, part, path, exc) from exc
        finally:
            os.close(parent)

    def _walk(self, parts: list[str], *, create: bool) -> int:
        """The folder ``root/parts...`` as an fd; FileNotFoundError if missing."""
        fd = self._open_root(create)
        for depth, part in enumerate(parts):
            fd = self._step(fd, part, "/".join(parts[: depth + 1]), create)
        return fd

    @contextmanager
    def _folder(self, parts: list[str], *, create: bool) -> Iterator[int]:
        fd = self._walk(parts, create=create)
        try:
            yield fd
        finally:
            os.close(fd)

    def _open_read(self, name: str) -> int:
        """A regular file opened for reading, never through a symlink."""
        folder, base = _split(name)
        with self._folder(folder, create=False) as dir_fd:
            try:
                fd = os.open(base, _READ, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                raise _not_followed(dir_fd, base, name, exc) from exc
        try:
            _require_regular(os.fstat(fd).st_mode, name)
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- segments --------------------------------------------------------------------

    def open_segment(self, name: str) -> SegmentWriter:
        """Create a new segment file; FileExistsError if anything has that name."""
        folder, base = _split(name)
        with self._folder(folder, create=True) as dir_fd:
            fd = os.open(base, _SEGMENT, FILE_MODE, dir_fd=dir_fd)
            try:
                return SegmentWriter(name, LocalSink(fd, os.dup(dir_fd), str(self.root / name)))
            except BaseException:
                os.close(fd)
                raise

    def segment_size(self, name: str) -> int | None:
        """The file's size (synced or not), None if it is missing."""
        folder, base = _split(name)
        try:
            with self._folder(folder, create=False) as dir_fd:
                found = os.stat(base, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        _require_regular(found.st_mode, name)
        return found.st_size

    def read_segment(self, name: str, start: int, length: int) -> Iterator[bytes]:
        """Exactly ``[start, start + length)``; ShortSegmentError now if it is not there."""
        check_range(start, length)
        have = self.segment_size(name) or 0
        if have < start + length:
            raise ShortSegmentError(name, have, start + length)
        return self._chunks(name, start, start + length)

    def _chunks(self, name: str, pos: int, end: int) -> Iterator[bytes]:
        if pos == end:
            return
        try:
            fd = self._open_read(name)
        except FileNotFoundError as exc:
            raise ShortSegmentError(name, 0, end) from exc
        try:
            while pos < end:
                chunk = os.pread(fd, min(READ_CHUNK, end - pos), pos)
                if not chunk:
                    raise ShortSegmentError(name, pos, end)
                pos += len(chunk)
                yield chunk
        finally:
            os.close(fd)

    # -- records ---------------------------------------------------------------------

    def get(self, name: str) -> bytes | None:
        """The whole file, None if it is missing."""
        try:
            fd = self._open_read(name)
        except FileNotFoundError:
            return None
        try:
            chunks = []
            while chunk := os.read(fd, READ_CHUNK):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def put(self, name: str, data: bytes, *, point: str = "record") -> None:
        """Temporary file, fsync, rename over the name, fsync the folder."""
        folder, base = _split(name)
        crashpoint(f"write_{point}")
        try:
            with self._folder(folder, create=True) as dir_fd:
                tmp = _temp_name(base)
                _write_new(dir_fd, tmp, data)
                try:
                    crashpoint(f"before_rename_{point}")
                    os.replace(tmp, base, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                except BaseException:
                    _discard(dir_fd, tmp)
                    raise
                crashpoint(f"after_rename_{point}")
                os.fsync(dir_fd)
        except OSError as exc:
            raise named(exc, str(self.root / name)) from None

    def create(self, name: str, data: bytes) -> bool:
        """Publish a fully written temporary file by hard link: exclusive and whole.

        ``link`` fails if the name exists (a symlink included), so a crash can never
        leave a half-written record under the name, and two creators never both win.
        Where the file system has no hard links, the record is written in place with
        ``O_EXCL``: still exclusive, but a crash may leave it torn.
        """
        folder, base = _split(name)
        with self._folder(folder, create=True) as dir_fd:
            try:
                created = _publish_by_link(dir_fd, base, data)
            except OSError as exc:
                if exc.errno not in _NO_LINKS:
                    raise
                created = _create_in_place(dir_fd, base, data)
            if created:
                os.fsync(dir_fd)
            return created

    def delete(self, name: str) -> None:
        """Unlink the name (a symlink itself, never its target); missing is fine."""
        folder, base = _split(name)
        try:
            with self._folder(folder, create=False) as dir_fd:
                os.unlink(base, dir_fd=dir_fd)
                os.fsync(dir_fd)
        except FileNotFoundError:
            return

    # -- folders ---------------------------------------------------------------------

    def list(self, prefix: str) -> list[str]:
        """Regular files whose names start with ``prefix``, sorted; symlinks are skipped."""
        folder, start = split_prefix(prefix)
        parts = folder[:-1].split("/") if folder else []
        try:
            dir_fd = self._walk(parts, create=False)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return []
            raise
        try:
            return sorted(_scan(dir_fd, folder, start))
        finally:
            os.close(dir_fd)

    def make_folder(self, prefix: str) -> None:
        """Create a folder (and those above it) owner-only, never through a symlink.

        For callers that root another storage there: its root is then known to be a
        folder of this one, not a link planted to lead elsewhere.
        """
        with self._folder(check_folder(prefix).split("/"), create=True):
            pass

    def remove_tree(self, prefix: str) -> None:
        """Remove a folder and all below it, without following any symlink; durable."""
        parts = check_folder(prefix).split("/")
        try:
            with self._folder(parts[:-1], create=False) as dir_fd:
                _remove_entry(dir_fd, parts[-1])
                os.fsync(dir_fd)
        except FileNotFoundError:
            return


def _remove_entry(dir_fd: int, base: str) -> None:
    """Remove a folder tree, or a symlink standing where the folder should be."""
    mode = os.stat(base, dir_fd=dir_fd, follow_symlinks=False).st_mode
    if stat.S_ISDIR(mode):
        shutil.rmtree(base, dir_fd=dir_fd)  # fd-based on Linux: immune to symlink swaps
    elif stat.S_ISLNK(mode):
        os.unlink(base, dir_fd=dir_fd)


def _scan(dir_fd: int, folder: str, start: str) -> Iterator[str]:
    """Names of regular files below ``dir_fd`` whose first part starts with ``start``."""
    with os.scandir(dir_fd) as entries:
        found = [
            (e.name, e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False))
            for e in entries
            if e.name.startswith(start) and not _hidden(e.name)
        ]
    for entry, is_dir, is_file in found:
        if is_file:
            yield folder + entry
        elif is_dir:
            yield from _scan_folder(dir_fd, entry, folder + entry + "/")


def _scan_folder(parent: int, entry: str, folder: str) -> Iterator[str]:
    try:
        fd = os.open(entry, _DIR, dir_fd=parent)
    except (FileNotFoundError, NotADirectoryError):
        return  # removed or swapped for something else meanwhile
    try:
        yield from _scan(fd, folder, "")
    finally:
        os.close(fd)


if TYPE_CHECKING:  # mypy proves that the classes keep the protocols
    _storage: type[Storage] = LocalStorage
    _sink: type[SegmentSink] = LocalSink
