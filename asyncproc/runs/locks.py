"""Who holds a run's lock, asked without taking it.

``status`` and ``list`` must never take a run's lock (a run starting at that instant
would be refused). On Linux the kernel's table of ``flock`` locks, ``/proc/locks``, says
whether anyone holds the lock file; elsewhere the holder recorded in the file is checked
for liveness (same host only). ``delete`` and ``cleanup`` do take the lock (:func:`hold`), without
waiting, to be sure nobody starts the run while it is being removed.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from .._errors import RunLockedError

PROC_LOCKS = Path("/proc/locks")


def holder_text(lock: Path) -> str:
    """The holder recorded in a lock file, as 'pid N on HOST since TIME'."""
    info = _holder_info(lock)
    if info is None:
        return "another process"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('started_at')}"


def _holder_info(lock: Path) -> dict[str, object] | None:
    try:
        info = orjson.loads(lock.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
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


@contextmanager
def hold(path: Path, what: str, *, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive flock on ``path``, recording this process as its holder.

    Without ``wait`` a held lock raises RunLockedError naming the holder. The kernel
    drops the lock when the process dies, so a killed run never blocks the next one.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(
                f"{what} is in progress in {holder_text(path)}; wait for it to finish "
                "or stop that process, then try again"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, orjson.dumps(_me()))
        yield
    finally:
        os.close(fd)


def _me() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
