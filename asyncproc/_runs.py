"""Run directories under a checkpoint directory: ids, manifests, locks, discovery.

::

    <checkpoint>/
        .lock                      held briefly while a run is chosen or created
        run_20261123_143022/
            manifest.json          Manifest: input, options, shard plan, status
            lock                   held by the process working on the run
            shards/0000.a.ckpt     ShardCheckpoint, two generations per shard
            segments/0000.<attempt>.out|.dead
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from ._errors import CheckpointError, CorruptCheckpointError, RunLockedError, RunNotFoundError
from ._records import Manifest, RunStatus
from ._store import atomic_write

MANIFEST = "manifest.json"


class RunDir:
    """One run's directory and its manifest."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.run_id = path.name

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def read(self) -> Manifest:
        try:
            raw = self.manifest_path.read_bytes()
        except FileNotFoundError:
            raise RunNotFoundError(f"run {self.run_id} has no manifest at {self.path}") from None
        except OSError as exc:
            raise CheckpointError(f"cannot read {self.manifest_path}: {exc.strerror}") from exc
        return Manifest.from_bytes(raw, f"manifest of run {self.run_id}")

    def write(self, manifest: Manifest) -> None:
        atomic_write(self.manifest_path, manifest.to_bytes(), "manifest")

    def set_status(self, manifest: Manifest, status: RunStatus, **changes: Any) -> Manifest:
        updated = replace(manifest, status=status, updated_at=time.time(), **changes)
        self.write(updated)
        return updated

    def clear_state(self) -> None:
        """Remove checkpoints and segments; the manifest (and its summary) stays."""
        for name in ("shards", "segments"):
            shutil.rmtree(self.path / name, ignore_errors=True)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run for this process; the OS drops the lock if the process dies."""
        with hold_lock(self.path / "lock", f"run {self.run_id}"):
            yield


@contextmanager
def hold_lock(path: Path, what: str, *, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive flock on ``path``; without ``wait``, a held lock is an error."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(
                f"{what} is in progress in {_holder(fd)}; wait for it to "
                "finish or stop that process, then run again"
            ) from None
        os.ftruncate(fd, 0)
        os.write(
            fd,
            orjson.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started_at": time.strftime("%Y-%m-%d %H:%M:%S"),
                }
            ),
        )
        yield
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    try:
        info = orjson.loads(os.pread(fd, 4096, 0))
        return f"pid {info['pid']} on {info['host']} since {info['started_at']}"
    except (orjson.JSONDecodeError, KeyError, TypeError, OSError):
        return "another process"


def new_run_dir(checkpoint_dir: Path) -> RunDir:
    """Claim a fresh ``run_YYYYMMDD_HHMMSS`` directory, suffixed when the second is taken."""
    stamp = time.strftime("run_%Y%m%d_%H%M%S")
    for attempt in range(1, 1000):
        path = checkpoint_dir / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return RunDir(path)
    raise CheckpointError(f"cannot create a run directory in {checkpoint_dir}")


def run_dirs(checkpoint_dir: Path) -> list[RunDir]:
    """Every run directory, newest first (ids sort by time)."""
    if not checkpoint_dir.is_dir():
        return []
    found = [RunDir(p) for p in checkpoint_dir.iterdir() if (p / MANIFEST).is_file()]
    return sorted(found, key=lambda r: _sort_key(r.run_id), reverse=True)


def _sort_key(run_id: str) -> tuple[str, int]:
    base, tail = run_id[:19], run_id[20:]  # run_YYYYMMDD_HHMMSS[-n]
    return base, int(tail) if tail.isdigit() else 0


def find_resumable(
    checkpoint_dir: Path, input_path: str, output_path: str, *, completed: bool = False
) -> RunDir | None:
    """The newest unfinished run of this input into this output (or newest of any status)."""
    for run in run_dirs(checkpoint_dir):
        try:
            manifest = run.read()
        except CorruptCheckpointError as exc:
            raise CheckpointError(
                f"{exc}; it cannot be resumed: remove {run.path} or start over with --new-run"
            ) from exc
        except RunNotFoundError:
            continue
        if manifest.status is RunStatus.COMPLETED and not completed:
            continue
        if manifest.input.path == input_path and manifest.output == output_path:
            return run
    return None
