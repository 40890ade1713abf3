"""A small per-user index of recent runs, so that runs are found wherever they live.

``asyncproc run`` keeps its runs beside the output (``.asyncproc``), so ``asyncproc
list`` in another directory would see nothing. Every run therefore notes where it lives
in ``$XDG_STATE_HOME/asyncproc/runs.jsonl`` (``~/.local/state/asyncproc/runs.jsonl``
when ``XDG_STATE_HOME`` is unset): one JSON line per invocation, ``{"run_id",
"checkpoint_dir", "cwd", "at"}``. Without ``--checkpoint``, ``list`` and ``status`` look
at the runs started from the current directory (``cwd``), or at every run with
``--all``; ``show`` and ``delete``, given a run id, look at every run.

The index is a convenience, never a source of truth: writing it never fails a run (a
problem is logged once), lines that do not parse are skipped, directories that no
longer exist are ignored, and it is compacted to the newest ``KEEP`` lines when it
grows past ``COMPACT_AT`` bytes (under a lock file, by an atomic rename).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

log = logging.getLogger("asyncproc")

INDEX_NAME = "runs.jsonl"
KEEP = 200  # lines kept by a compaction
COMPACT_AT = 64 * 1024  # bytes


def index_path() -> Path:
    """Where this user's index lives (the file need not exist yet)."""
    state = os.environ.get("XDG_STATE_HOME") or ""
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "asyncproc" / INDEX_NAME


def note(run_id: str, checkpoint_dir: Path) -> None:
    """Record that ``run_id`` lives under ``checkpoint_dir``; never raises."""
    line = orjson.dumps({"run_id": run_id, "checkpoint_dir": str(checkpoint_dir.resolve()),
                         "cwd": _cwd(), "at": round(time.time(), 3)}) + b"\n"  # fmt: skip
    path = index_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _locked(path):
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, line)
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            if size > COMPACT_AT:
                _compact(path)
    except OSError as exc:
        log.debug("could not note run %s in the run index %s: %s", run_id, path, exc)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _compact(path: Path) -> None:
    lines = path.read_bytes().splitlines(keepends=True)[-KEEP:]
    temporary = path.with_name(f".{INDEX_NAME}.tmp")
    temporary.write_bytes(b"".join(lines))
    os.replace(temporary, path)


def _cwd() -> str | None:
    """The current directory, as runs started from it are noted; None if it is gone."""
    try:
        return str(Path.cwd().resolve())
    except OSError:  # the current directory was removed
        return None


def checkpoint_dirs(started_here: bool = False) -> list[Path]:
    """Checkpoint directories of recent runs that still exist, most recent first; only
    those of runs started from the current directory when ``started_here``."""
    here = _cwd() if started_here else None
    if started_here and here is None:
        return []
    try:
        raw = index_path().read_bytes()
    except OSError:
        return []
    found: dict[Path, None] = {}
    for line in reversed(raw.splitlines()):
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(entry, dict) or (started_here and entry.get("cwd") != here):
            continue
        where = entry.get("checkpoint_dir")
        if isinstance(where, str) and os.path.isabs(where):
            found.setdefault(Path(where), None)
    return [p for p in found if p.is_dir()]
