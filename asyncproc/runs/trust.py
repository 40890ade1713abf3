"""Refusing directories that another user could write to, the way ssh treats ``~/.ssh``.

A checkpoint directory holds records that steer a run: which input to read, which
segments to copy into the output. Whoever can write there could plant a run that makes
this user's run read or publish what they choose (a secret copied into a readable
output, say). So a checkpoint or run directory must belong to this user (or to root)
and be writable by nobody else; anything else is refused with what to do about it.
A run directory is checked with every folder below it, without following symlinks.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .._errors import UntrustedDirectoryError

_SHARED = stat.S_IWGRP | stat.S_IWOTH


def require_private(path: Path, what: str, *, hint: str) -> None:
    """Refuse ``path`` unless it is this user's (or root's) and only its owner writes it.

    ``hint`` says what else the user may do (choose another ``--checkpoint``, say).
    The path itself may be a symlink (the caller's choice); what it names is checked.
    """
    _check(os.stat(path), path, what, hint)


def require_private_tree(path: Path, what: str, *, hint: str) -> None:
    """:func:`require_private` for ``path`` and every folder below it."""
    require_private(path, what, hint=hint)
    for folder in _folders(path):
        _check(os.lstat(folder), folder, f"folder of {what}", hint)


def _folders(root: Path) -> list[Path]:
    found, pending = [], [root]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    found.append(Path(entry.path))
                    pending.append(Path(entry.path))
    return found


def _check(st: os.stat_result, path: Path, what: str, hint: str) -> None:
    me = os.geteuid()
    if st.st_uid not in (me, 0):
        raise UntrustedDirectoryError(
            f"{what} {path} belongs to uid {st.st_uid}, not to you (uid {me}): its owner "
            f"could plant runs there that make yours read or write what they choose; "
            f"remove it if you trust its contents no more than its owner, or {hint}"
        )
    if st.st_mode & _SHARED:
        raise UntrustedDirectoryError(
            f"{what} {path} is writable by others (mode {stat.S_IMODE(st.st_mode):04o}): "
            f"anyone who can write there could plant runs that make yours read or write "
            f"what they choose; run `chmod go-w {path}`, or {hint}"
        )
