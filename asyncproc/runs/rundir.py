"""Run directories under a checkpoint directory: ids, manifests, locks, discovery.

::

    <checkpoint>/
        .lock                      held briefly while a run is chosen or created
        run_20261123_143022/
            manifest.json          Manifest: input, options, units, status
            index.json             LineIndex: item index at line starts every few KiB
            lock                   held by the process working on the run
            units/0000.a.ckpt      UnitCheckpoint, two generations per unit
            segments/0000.<attempt>.out|.dead

A :class:`RunDir` is that layout on any storage; the ground it stands on (a lock file
here, a lease elsewhere: :mod:`.store`) holds it. The functions below are the local
folder's: ids claimed by ``mkdir``, ``flock``ed locks, trust in directories.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from .._errors import (
    CheckpointError,
    ConfigError,
    CorruptCheckpointError,
    RunNotFoundError,
    named,
    speaking_cli,
)
from ..storage.localfs import LocalStorage
from ..storage.protocol import Storage
from ..storage.records import LineIndex, Manifest, RunStatus
from ..storage.unitstore import CHECKPOINTS, SEGMENTS, UnitStore, VolatileUnitStore
from .live import LIVE
from .locks import hold, holder_text, is_held
from .trust import require_private, require_private_tree

MANIFEST = "manifest.json"
RUN_ID = re.compile(r"run_[0-9]{8}_[0-9]{6}(-[0-9]+)?")
DIR_MODE = 0o700
INDEX = "index.json"  # LineIndex: written once, before the manifest


def failed_items_path(output: Path) -> Path:
    """Where a run's failed items go: ``<output stem>.failed.jsonl`` beside the output.

    Always derived from the output, never read from a record, so nothing planted in a
    run directory can point a run at another file.
    """
    return output.with_name(f"{output.stem}.failed.jsonl")


class RunGround(Protocol):
    """What the ground under a run does besides storing: lock it, and sweep crash leftovers."""

    def hold(self, run: RunDir) -> AbstractContextManager[object]:
        """Hold the run for this process (a lock file, or a lease)."""
        ...

    def holder(self, run: RunDir) -> str | None:
        """Who holds the run now, in words; None if nobody does."""
        ...

    def sweep(self, run: RunDir) -> None:
        """Remove what a write cut short by a crash left behind (nothing on most grounds)."""
        ...


class RunDir:
    """One run's storage, its manifest, and its lock (through the ground it stands on).

    ``path`` names the run in messages and views; ``url`` is where a unit's task in
    another process finds it (None for a storage that lives only in this process).
    """

    def __init__(
        self, storage: Storage, run_id: str, ground: RunGround, *, path: Path,
        url: str | None = None,
    ) -> None:  # fmt: skip
        self.storage, self.run_id, self.ground = storage, run_id, ground
        self.path, self.url = path, url

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def read(self) -> Manifest:
        try:
            raw = self.storage.get(MANIFEST)
        except OSError as exc:
            raise CheckpointError(f"cannot read {self.manifest_path}: {exc.strerror}") from exc
        if raw is None:
            raise RunNotFoundError(f"run {self.run_id} has no manifest at {self.path}")
        manifest = Manifest.from_bytes(raw, f"manifest of run {self.run_id}")
        if manifest.run_id != self.run_id:  # copied, renamed or forged: it names another run
            raise CorruptCheckpointError(
                f"the manifest in {self.path} belongs to run {manifest.run_id}, not "
                f"{self.run_id}: the directory was renamed, copied or tampered with (a "
                "renamed run works again under its own name)"
            )
        return manifest

    def write(self, manifest: Manifest) -> None:
        self.storage.put(MANIFEST, manifest.to_bytes(), point="manifest")

    def write_index(self, index: LineIndex) -> None:
        self.storage.put(INDEX, index.to_bytes(), point="index")

    def read_index(self) -> LineIndex:
        raw = self.storage.get(INDEX)
        if raw is None:
            raise CorruptCheckpointError(f"run {self.run_id} has no {INDEX}")
        return LineIndex.from_bytes(raw, f"line index of run {self.run_id}")

    def unit_store(self, unit_id: int, *, durable: bool = True) -> UnitStore:
        kind = UnitStore if durable else VolatileUnitStore
        return kind(self.storage, unit_id)

    def set_status(self, manifest: Manifest, status: RunStatus, **changes: Any) -> Manifest:
        updated = replace(manifest, status=status, updated_at=time.time(), **changes)
        self.write(updated)
        return updated

    def clear_state(self) -> None:
        """Remove checkpoints, segments and the index; the manifest (and its summary) stays."""
        for folder in (CHECKPOINTS, SEGMENTS):
            self.storage.remove_tree(folder)
        self.storage.delete(INDEX)
        self.storage.delete(LIVE)
        self.ground.sweep(self)

    def locked(self) -> AbstractContextManager[object]:
        """Hold the run for this process until the context ends."""
        return self.ground.hold(self)

    def holder(self) -> str | None:
        """Who holds the run now, in words; None if nobody does."""
        return self.ground.holder(self)


class FileGround:
    """A run directory on local disk: an ``flock``ed lock file the OS drops with the process.

    The run directory must be this user's and writable by nobody else, checked before
    anything in it is trusted (:mod:`.trust`).
    """

    @contextmanager
    def hold(self, run: RunDir) -> Iterator[None]:
        require_private_tree(run.path, "run directory", hint=f"remove {run.path}")
        with hold(run.path / "lock", f"run {run.run_id}"):
            yield

    def holder(self, run: RunDir) -> str | None:
        lock = run.path / "lock"
        return holder_text(lock) if is_held(lock) else None

    def sweep(self, run: RunDir) -> None:
        for leftover in run.path.glob(".*.tmp"):  # a record write cut short by a crash
            leftover.unlink(missing_ok=True)


FILE_GROUND = FileGround()


def local_run(path: Path) -> RunDir:
    """The run in the local directory ``path`` (its id is the directory's name)."""
    return RunDir(LocalStorage(path), path.name, FILE_GROUND, path=path, url=os.path.realpath(path))


def see_runs(checkpoint_dir: Path) -> str:
    """Where the caller finds the run ids: a command, or a call from Python."""
    if speaking_cli():
        return f"see `asyncproc list --checkpoint {checkpoint_dir}`"
    return f"see asyncproc.list_runs({str(checkpoint_dir)!r})"


def require_trusted(checkpoint_dir: Path) -> None:
    """Refuse a checkpoint directory another user could write (:mod:`.trust`).

    The hint names the option as the caller spells it: ``--checkpoint`` on the command
    line, ``checkpoint_dir`` from Python.
    """
    hint = f"choose another {named('checkpoint_dir')}"
    require_private(checkpoint_dir, "checkpoint directory", hint=hint)


def directory_lock(checkpoint_dir: Path) -> AbstractContextManager[None]:
    """The checkpoint directory's lock: held while a run is chosen, created or removed.

    The directory must be this user's and writable by nobody else (:mod:`.trust`).
    """
    require_trusted(checkpoint_dir)
    return hold(checkpoint_dir / ".lock", f"checkpoint directory {checkpoint_dir}", wait=True)


def make_checkpoint_dir(path: Path) -> None:
    """Create a checkpoint directory owner-only (its runs hold raw data); fine if it exists."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)


def new_run_dir(checkpoint_dir: Path) -> RunDir:
    """Claim a fresh ``run_YYYYMMDD_HHMMSS`` directory, suffixed when the second is taken.

    Called under the directory lock, so run directories that never got a manifest are
    plannings a crash cut short: they are removed first (:func:`sweep_unplanned`).
    """
    sweep_unplanned(checkpoint_dir)
    stamp = time.strftime("run_%Y%m%d_%H%M%S")
    for attempt in range(1, 1000):
        path = checkpoint_dir / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            path.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        return local_run(path)
    raise CheckpointError(f"cannot create a run directory in {checkpoint_dir}")


_PLANNING_LEFTOVER = re.compile(rf"{INDEX}|\.({INDEX}|{MANIFEST})\.[0-9a-f]{{16}}\.tmp")


def sweep_unplanned(checkpoint_dir: Path) -> None:
    """Remove run directories holding only what planning writes before the manifest.

    Only a planning killed before its manifest leaves one (an index, temporary files):
    planning holds the directory lock, as the caller does, so none is in progress.
    An empty directory (an id claimed, perhaps by another tool) or one holding anything
    else is left alone; nothing is followed.
    """
    for path in checkpoint_dir.iterdir():
        if not RUN_ID.fullmatch(path.name) or path.is_symlink() or not path.is_dir():
            continue
        entries = [e.name for e in path.iterdir()]
        if entries and all(_PLANNING_LEFTOVER.fullmatch(e) for e in entries):
            for entry in entries:
                (path / entry).unlink(missing_ok=True)
            with suppress(OSError):  # something appeared meanwhile: leave it
                path.rmdir()


def run_path(checkpoint_dir: Path, run_id: str) -> Path:
    """The directory of ``run_id``, refusing an id that is not a plain run id.

    An id such as ``../../x`` or ``/etc`` would reach outside the checkpoint directory,
    and a run directory that is a symlink could lead anywhere: both are refused.
    """
    if not RUN_ID.fullmatch(run_id):
        raise ConfigError(
            f"{run_id!r} is not a run id; run ids look like run_20261123_143022 "
            f"({see_runs(checkpoint_dir)})"
        )
    path = checkpoint_dir / run_id
    if path.is_symlink():
        raise CheckpointError(
            f"run directory {path} is a symbolic link; asyncproc never follows one: "
            "remove it if you did not put it there"
        )
    return path


def run_order(run_id: str) -> tuple[str, int]:
    """Sort key of run ids: by time, then by the ``-n`` suffix of runs in the same second."""
    base, tail = run_id[:19], run_id[20:]  # run_YYYYMMDD_HHMMSS[-n]
    return base, int(tail) if tail.isdigit() else 0
