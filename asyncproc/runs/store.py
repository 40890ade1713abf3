"""A checkpoint directory as the engine is handed it: its runs' storage, and their locks.

The edges (``_api``, the CLI, the keyed entry points) choose one :class:`RunStore` with
:func:`run_store`, once, and hand it down; nothing below them asks whether it is local.

* :class:`LocalRunStore`: a folder on local disk; the directory's and each run's lock
  are ``flock``ed files the OS drops with the process, and every folder must be this
  user's (:mod:`.trust`);
* :class:`LeasedRunStore`: any :class:`Storage` (memory with its fault tools, say); the
  locks are leases (:mod:`.lease`), a run id is claimed by creating ``<run id>/claim``
  exclusively;
* :class:`UrlRunStore`: a leased store at an fsspec URL (``s3://bucket/ck``), whose runs
  a unit's task in another process or on another machine can reach by URL.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from .._errors import (
    CheckpointError,
    ConfigError,
    CorruptCheckpointError,
    OutputError,
    RunNotFoundError,
    option,
)
from ..storage.location import Location
from ..storage.protocol import Storage
from ..storage.records import RunStatus
from ..storage.subfolder import Subfolder
from . import index, rundir
from .lease import holder, leased
from .rundir import RUN_ID, RunDir, run_order

RUN_LEASE, DIRECTORY_LEASE = "run", "directory"
CHOOSE_WAIT = 60.0  # seconds to wait for another process choosing a run
CLAIM = "claim"  # the record whose exclusive creation claims a run id on a leased store


class RunStore(Protocol):
    """Where runs live, and how they are locked."""

    @property
    def where(self) -> str:
        """The checkpoint directory in words: a path or a URL."""
        ...

    def prepare(self) -> None:
        """Make the directory exist, if it has to be made."""
        ...

    def directory_lock(self) -> AbstractContextManager[object]:
        """Held while a run is chosen, created or removed."""
        ...

    def run_ids(self) -> list[str]:
        """Every run id here, newest first."""
        ...

    def run(self, run_id: str) -> RunDir:
        """The run ``run_id`` names; ConfigError for an id that could lead elsewhere."""
        ...

    def new_run(self) -> RunDir:
        """Claim a fresh ``run_YYYYMMDD_HHMMSS`` id, suffixed when the second is taken."""
        ...

    def noted(self, run_id: str) -> None:
        """Remember where the run is, so run management finds it from anywhere."""
        ...


def run_store(where: str | os.PathLike[str] | Location | Storage) -> RunStore:
    """The store a checkpoint directory names: the one place local and URL part ways."""
    if isinstance(where, (str, os.PathLike)):
        where = Location(where)
    if not isinstance(where, Location):
        return LeasedRunStore(where, f"<{type(where).__name__} {id(where):x}>")
    if where.local is not None:
        return LocalRunStore(where.local)
    return UrlRunStore(where)


class LocalRunStore:
    """Run directories in a local folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = os.path.realpath(path)  # as Location.url: a link loop is reported where used

    def __repr__(self) -> str:
        return f"LocalRunStore({self.where!r})"

    def prepare(self) -> None:
        try:
            rundir.make_checkpoint_dir(self.path)
        except OSError as exc:
            raise OutputError(
                f"cannot create checkpoint directory {self.path}: {exc.strerror}"
            ) from exc

    def directory_lock(self) -> AbstractContextManager[object]:
        return rundir.directory_lock(self.path)

    def run_ids(self) -> list[str]:
        if not self.path.is_dir():
            return []
        ids = [p.name for p in self.path.iterdir() if not p.is_symlink() and p.is_dir()]
        return sorted((i for i in ids if RUN_ID.fullmatch(i)), key=run_order, reverse=True)

    def run(self, run_id: str) -> RunDir:
        return rundir.local_run(rundir.run_path(self.path, run_id))

    def new_run(self) -> RunDir:
        return rundir.new_run_dir(self.path)

    def noted(self, run_id: str) -> None:
        index.note(run_id, self.path)


class LeaseGround:
    """A run on storage without ``flock``: its lock is a lease; nothing is left half-written."""

    @contextmanager
    def hold(self, run: RunDir) -> Iterator[None]:
        with leased(run.storage, RUN_LEASE, f"run {run.run_id}"):
            yield

    def holder(self, run: RunDir) -> str | None:
        return holder(run.storage, RUN_LEASE)

    def sweep(self, run: RunDir) -> None:
        """Nothing: a record is one whole write, never a temporary file renamed."""


LEASE_GROUND = LeaseGround()


class LeasedRunStore:
    """Runs on any storage, locked by leases; ``where`` names it in messages."""

    def __init__(self, root: Storage, where: str) -> None:
        self.root, self.where = root, where

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.where!r})"

    def prepare(self) -> None:
        """Nothing: an object store has no folders to make."""

    def directory_lock(self) -> AbstractContextManager[object]:
        label = f"checkpoint directory {self.where}"
        return leased(self.root, DIRECTORY_LEASE, label, wait=CHOOSE_WAIT)

    def run_ids(self) -> list[str]:
        ids = {name.partition("/")[0] for name in self.root.list("run_")}
        return sorted((i for i in ids if RUN_ID.fullmatch(i)), key=run_order, reverse=True)

    def run(self, run_id: str) -> RunDir:
        if not RUN_ID.fullmatch(run_id):
            raise ConfigError(
                f"{run_id!r} is not a run id; run ids look like run_20261123_143022 "
                f"(see `asyncproc list --checkpoint {self.where}`)"
            )
        return self._run(run_id)

    def _run(self, run_id: str) -> RunDir:
        storage = Subfolder(self.root, f"{run_id}/")
        return RunDir(storage, run_id, LEASE_GROUND, path=Path(self.where) / run_id)

    def new_run(self) -> RunDir:
        stamp = time.strftime("run_%Y%m%d_%H%M%S")
        for attempt in range(1, 1000):
            run_id = stamp if attempt == 1 else f"{stamp}-{attempt}"
            if self.root.create(f"{run_id}/{CLAIM}", b"{}"):
                return self._run(run_id)
        raise CheckpointError(f"cannot create a run directory in {self.where}")

    def noted(self, run_id: str) -> None:
        """Nothing: the run index lists local checkpoint directories only."""


class UrlRunStore(LeasedRunStore):
    """Runs at an fsspec URL; a unit's task elsewhere reaches a run by its URL."""

    def __init__(self, location: Location) -> None:
        super().__init__(location.storage(), location.url)
        self.location = location

    def run_ids(self) -> list[str]:
        """One listing of the directory's first level, not of every object below it."""
        fs = self.location.fs
        fs.invalidate_cache()
        try:
            entries = fs.ls(self.location.key, detail=False)
        except FileNotFoundError:
            return []
        ids = [str(e).rstrip("/").rpartition("/")[2] for e in entries]
        return sorted((i for i in ids if RUN_ID.fullmatch(i)), key=run_order, reverse=True)

    def _run(self, run_id: str) -> RunDir:
        at = self.location.child(run_id)
        return RunDir(at.storage(), run_id, LEASE_GROUND, path=Path(at.pure), url=at.url)


def find_resumable(
    store: RunStore, input_url: str, output_url: str, *, completed: bool = False
) -> RunDir | None:
    """The newest unfinished run of this input into this output (or newest of any status)."""
    for run_id in store.run_ids():
        run = store.run(run_id)
        try:
            manifest = run.read()
        except CorruptCheckpointError as exc:
            raise CheckpointError(
                f"{exc}; it cannot be resumed: delete it (asyncproc delete {run.run_id}) or "
                f"start over with {option('new_run')}"
            ) from exc
        except RunNotFoundError:
            continue  # not a file run (a keyed one, or one being created)
        if manifest.status is RunStatus.COMPLETED and not completed:
            continue
        if manifest.input.path == input_url and manifest.output == output_url:
            return run
    return None
