"""The final merge: committed segments, units in input order, into the output, atomically.

Streams a megabyte at a time; a crash at any point leaves either no output or the old
one (the new file appears by rename), and the merge can simply be run again.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import zlib
from collections.abc import Iterable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO

from .._errors import CorruptCheckpointError, OutputError, again
from ..runs.rundir import failed_items_path
from ..storage.faults import crashpoint
from ..storage.protocol import TEMP_SUFFIX, Storage
from ..storage.records import SegmentRef, UnitCheckpoint
from ..storage.unitstore import SEGMENTS, UnitStore

_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def committed_chunks(
    storage: Storage, checkpoints: Iterable[UnitCheckpoint], dead: bool
) -> Iterator[bytes]:
    """Every committed byte of the output (or dead-letter) segments, in the order given.

    Each segment's CRC is checked as its bytes stream past: a mismatch raises before
    the stream ends, so the output being written is abandoned, never published.
    """
    for checkpoint in checkpoints:
        store = UnitStore(storage, checkpoint.unit_id)
        refs: tuple[SegmentRef, ...] = checkpoint.dead_segments if dead else checkpoint.segments
        for ref in refs:
            crc = 0
            for chunk in store.read_committed(ref):
                crc = zlib.crc32(chunk, crc)
                yield chunk
            if ref.crc is not None and crc != ref.crc:
                raise _damaged(storage, checkpoint.unit_id, ref)


def _damaged(storage: Storage, unit_id: int, ref: SegmentRef) -> CorruptCheckpointError:
    root = getattr(storage, "root", None)
    where = f"{str(root).rstrip('/')}/{SEGMENTS}{ref.name}" if root else SEGMENTS + ref.name
    return CorruptCheckpointError(
        f"segment {where} of unit {unit_id} fails its CRC at the merge: its committed bytes "
        f"changed after they were written, so nothing was published; {again()} to redo "
        "the unit from its last checkpoint that checks out"
    )


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def whole_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Re-cut a byte stream into blocks that end on a newline."""
    carry = b""
    for chunk in chunks:
        block = carry + chunk
        cut = block.rfind(b"\n") + 1
        carry = block[cut:]
        if cut:
            yield block[:cut]
    if carry:
        yield carry + b"\n"


def write_json_array(chunks: Iterable[bytes], fh: BinaryIO) -> None:
    """Lay JSON lines out as an array, one indented record per line."""
    separator = b"[\n  "
    for block in whole_lines(chunks):
        fh.write(separator + block[:-1].replace(b"\n", b",\n  "))
        separator = b",\n  "
    fh.write(b"[]\n" if separator == b"[\n  " else b"\n]\n")


def write_json_lines(chunks: Iterable[bytes], fh: BinaryIO) -> None:
    for chunk in chunks:
        fh.write(chunk)


def publish(path: Path, chunks: Iterable[bytes], as_array: bool, *, private: bool = False) -> None:
    """Write ``path`` whole or not at all: temporary file, fsync, rename, fsync dir.

    The temporary file has a name of its own (``.<name>.<random>.tmp``), created
    exclusively and never through a symlink, so no other writer and nothing planted
    there can share or redirect it. An existing file's permission bits (and, where
    allowed, its group) are kept; a new one gets the umask's, or owner-only for
    ``private`` data. A file another user owns is never replaced (:class:`OutputError`):
    they could rewrite what is published. On any error the temporary file is removed,
    and the error names ``path``. Leftovers of a crashed publish are removed first: the
    caller holds the output's lock, so no live writer owns them.
    """
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _sweep(directory, path.name)
        tmp = f".{path.name}.{secrets.token_hex(8)}{TEMP_SUFFIX}"
        try:
            _write_temp(directory, tmp, _kept(path), private, chunks, as_array)
            crashpoint("before_rename_output")
            os.replace(tmp, path.name, src_dir_fd=directory, dst_dir_fd=directory)
        except BaseException as exc:
            with suppress(OSError):
                os.unlink(tmp, dir_fd=directory)
            if isinstance(exc, OSError):  # named after the output, not the temporary file
                raise OSError(exc.errno, exc.strerror, str(path)) from exc
            raise
        os.fsync(directory)
    finally:
        os.close(directory)


def _kept(path: Path) -> os.stat_result | None:
    """The existing output's status, if it is a regular file, to keep its permissions."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if st.st_uid != os.geteuid():
        raise OutputError(
            f"{path} belongs to uid {st.st_uid}, who could rewrite what this run publishes; "
            f"remove it and {again()}"
        )
    return st if stat.S_ISREG(st.st_mode) else None


def _write_temp(
    directory: int, name: str, old: os.stat_result | None, private: bool,
    chunks: Iterable[bytes], as_array: bool,
) -> None:  # fmt: skip
    fd = os.open(name, _NEW_FILE, 0o600 if private else 0o666, dir_fd=directory)
    with os.fdopen(fd, "wb") as fh:
        (write_json_array if as_array else write_json_lines)(chunks, fh)
        fh.flush()
        if old is not None:
            _keep_permissions(fd, old)
        os.fsync(fd)


def _keep_permissions(fd: int, old: os.stat_result) -> None:
    os.fchmod(fd, stat.S_IMODE(old.st_mode) & 0o777)
    if os.fstat(fd).st_gid != old.st_gid:
        with suppress(PermissionError):  # a group we are not in: only root may
            os.fchown(fd, -1, old.st_gid)


def _sweep(directory: int, name: str) -> None:
    """Remove temporary files a crashed publish of ``name`` left (unlink never follows)."""
    leftover = re.compile(rf"\.{re.escape(name)}\.[0-9a-f]{{16}}{re.escape(TEMP_SUFFIX)}")
    for entry in os.listdir(directory):
        if leftover.fullmatch(entry):
            with suppress(FileNotFoundError):
                os.unlink(entry, dir_fd=directory)


def merge(
    storage: Storage, checkpoints: list[UnitCheckpoint], output: Path, as_array: bool
) -> Path | None:
    """Write the output and the failed-items file; return the latter if there is one.

    ``checkpoints`` are the units' final checkpoints in order of the units' starts.
    """
    publish(output, committed_chunks(storage, checkpoints, dead=False), as_array)
    crashpoint("after_output")
    failed = failed_items_path(output)
    if any(c.failed for c in checkpoints):
        publish(failed, committed_chunks(storage, checkpoints, dead=True), False, private=True)
        return failed
    failed.unlink(missing_ok=True)
    return None
