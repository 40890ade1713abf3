"""Locks: taking one safely on untrusted ground, and asking who holds one without taking it.

A lock file is opened without following a symlink and must be a plain file of this
user's with a single name (:func:`hold`), since it is written; an output is held by a
lock file beside it for a whole run (:func:`output_lock`).

``status`` and ``list`` must never take a run's lock (a run starting at that instant
would be refused). On Linux the kernel's table of ``flock`` locks, ``/proc/locks``, says
whether anyone holds the lock file; elsewhere the holder recorded in the file is checked
for liveness (same host only). ``delete`` and ``cleanup`` do take the lock (:func:`hold`), without
waiting, to be sure nobody starts the run while it is being removed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path

import orjson

from .._errors import CheckpointError, RunLockedError

PROC_LOCKS = Path("/proc/locks")


def holder_text(lock: Path) -> str:
    """The holder recorded in a lock file, as 'pid N on HOST since TIME'."""
    info = _holder_info(lock)
    if info is None:
        return "another process"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('started_at')}"


def _holder_info(lock: Path) -> dict[str, object] | None:
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        info = orjson.loads(os.read(fd, 4096))
    except (OSError, orjson.JSONDecodeError):
        return None
    finally:
        os.close(fd)
    return info if isinstance(info, dict) else None


def is_held(lock: Path) -> bool:
    """True when a live process holds ``lock``; never takes the lock itself."""
    try:
        st = lock.stat()
    except FileNotFoundError:
        return False
    kernel = _held_per_kernel(os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    return kernel if kernel is not None else _holder_alive(lock)


def _held_per_kernel(major: int, minor: int, inode: int) -> bool | None:
    try:
        text = PROC_LOCKS.read_text()
    except OSError:
        return None
    wanted = (major, minor, inode)
    return any(_lock_key(line) == wanted for line in text.splitlines() if "FLOCK" in line)


def _lock_key(line: str) -> tuple[int, int, int] | None:
    fields = line.replace("->", "").split()
    try:  # id: FLOCK ADVISORY WRITE pid maj:min:inode start end
        major, minor, inode = fields[5].split(":")
        return int(major, 16), int(minor, 16), int(inode)
    except (IndexError, ValueError):
        return None


def _holder_alive(lock: Path) -> bool:
    info = _holder_info(lock)
    if info is None or info.get("host") != socket.gethostname():
        return False
    pid = info.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_OPEN = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
LOCK_MODE = 0o600


def _refusal(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"lock file {path} {why}; asyncproc never writes through one: remove it if "
        "you did not put it there, then try again"
    )


def _open_lock(path: Path) -> int:
    """Open (or create) a lock file: never through a symlink, a FIFO or another's file.

    The lock file is truncated and written (the holder's name), so it must be a plain
    file of this user's with no other name: a symlink or a hard link planted there
    would make that write land on another file.
    """
    try:
        fd = os.open(path, _OPEN, LOCK_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refusal(path, "is a symbolic link") from None
        raise
    st = os.fstat(fd)
    why = None
    if not stat.S_ISREG(st.st_mode):
        why = "is not a regular file"
    elif st.st_nlink != 1:
        why = f"has {st.st_nlink} names (hard links)"
    elif st.st_uid != os.geteuid():
        why = f"belongs to another user (uid {st.st_uid})"
    if why is not None:
        os.close(fd)
        raise _refusal(path, why)
    return fd


def _acquire(path: Path, what: str, wait: bool) -> int:
    """An fd holding the flock on the file that is at ``path`` now.

    A holder that removes its lock file on release (:func:`output_lock`) may do so
    between our open and our flock: then the lock we got is on a name that is gone,
    so check that the path still names our file, and try again if not.
    """
    while True:
        fd = _open_lock(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(
                f"{what} is in progress in {holder_text(path)}; wait for it to finish "
                "or stop that process, then try again"
            ) from None
        mine = os.fstat(fd)
        try:
            now = os.lstat(path)
        except FileNotFoundError:
            now = None
        if now is not None and (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
            return fd
        os.close(fd)


@contextmanager
def hold(path: Path, what: str, *, wait: bool = False, remove: bool = False) -> Iterator[None]:
    """Hold an exclusive flock on ``path``, recording this process as its holder.

    Without ``wait`` a held lock raises RunLockedError naming the holder. The kernel
    drops the lock when the process dies, so a killed run never blocks the next one.
    With ``remove`` the file is removed on release (while still locked), so it leaves
    nothing behind; a process that opened it meanwhile sees that and opens it anew.
    """
    fd = _acquire(path, what, wait)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, orjson.dumps(_me()))
        yield
    finally:
        if remove:
            with suppress(FileNotFoundError):
                os.unlink(path)
        os.close(fd)


def output_lock_path(output: Path) -> Path:
    """The lock file beside an output: ``.<name>.asyncproc.lock``."""
    return output.with_name(f".{output.name}.asyncproc.lock")


def output_lock(output: Path) -> AbstractContextManager[None]:
    """Hold an output for a whole run: two runs never write one output, whatever their
    checkpoint directories. Creating the lock file is also the proof that the output's
    directory takes new files (permission bits alone miss root, ACLs, read-only mounts).
    """
    return hold(output_lock_path(output), f"a run writing {output}", remove=True)


def _me() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
