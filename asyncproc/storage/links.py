"""Following symlinks on the way to a file we will write, by the kernel's rule.

Linux's ``fs.protected_symlinks`` refuses to follow a symlink that sits in a sticky,
world-writable directory (``/tmp``) unless the follower owns the link or the
directory's owner does: otherwise anyone could plant ``/tmp/out.json`` pointing at a
file of yours and have your next run overwrite it. ``Path.resolve()`` knows no such
rule (and root is not protected by the kernel's), so the output's path is resolved
here, one component at a time, applying it to every link on the way.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .._errors import UnsafeLinkError

MAX_LINKS = 40  # as the kernel: more links than this on one path is a loop


def may_follow(link: os.stat_result, directory: os.stat_result) -> bool:
    """The kernel's rule: a link in a sticky, world-writable directory is followed only
    by its owner, or when the directory's owner owns it."""
    shared = directory.st_mode & stat.S_ISVTX and directory.st_mode & stat.S_IWOTH
    return not shared or link.st_uid in (os.geteuid(), directory.st_uid)


def resolve_safely(path: Path) -> Path:
    """``path`` with every symlink followed, as ``Path.resolve()`` (a missing tail is
    kept as given), refusing any link :func:`may_follow` forbids (:class:`UnsafeLinkError`)."""
    pending = list(reversed(Path(os.path.abspath(path)).parts[1:]))
    current, links = Path("/"), 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent
            continue
        step = current / part
        try:
            st = os.lstat(step)
        except (FileNotFoundError, NotADirectoryError):
            return step.joinpath(*reversed(pending))
        if not stat.S_ISLNK(st.st_mode):
            current = step
            continue
        links += 1
        if links > MAX_LINKS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))
        _check_link(step, st, os.stat(current))
        target = Path(os.readlink(step))
        if target.is_absolute():
            current = Path("/")
        pending.extend(reversed(target.parts[1:] if target.is_absolute() else target.parts))
    return current


def _check_link(link: Path, st: os.stat_result, directory: os.stat_result) -> None:
    if may_follow(st, directory):
        return
    raise UnsafeLinkError(
        f"{link} is a symlink owned by uid {st.st_uid} in {link.parent}, a sticky directory "
        f"others may write (owned by uid {directory.st_uid}): it is not followed, as the "
        "kernel would not; remove it or give a path without it"
    )
