"""Runs whose checkpoint directory is an fsspec URL (``s3://bucket/ck``, ``memory://ck``).

The same run directory layout as on local disk, through :class:`FsspecStorage`: the
manifest and checkpoints are whole-object PUTs, segments are immutable part objects.
What a local directory does with the kernel is done here with objects: the run lock and
the checkpoint directory's lock are leases (:mod:`.lease`), a run id is claimed by
creating ``<run id>/claim`` exclusively, and runs are found by listing the directory.

The functions at the bottom take a :class:`Location` and pick the local or the remote
way, so the engine asks one place whatever the checkpoint directory is.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from .._errors import (
    AsyncprocError,
    CheckpointError,
    ConfigError,
    CorruptCheckpointError,
    RunNotFoundError,
)
from .._options import DEFAULT_CHECKPOINT
from ..storage.location import Location
from ..storage.records import RunStatus
from ..storage.unitstore import CHECKPOINTS, SEGMENTS
from . import rundir
from .cleanup import Cleanup
from .failures import failures_from_segments
from .fileruns import _view, unit_checkpoints
from .lease import holder, leased
from .rundir import INDEX, MANIFEST, RUN_ID, RunDir, run_order
from .views import FINISHED, RunView, derive_status

RUN_LEASE, DIRECTORY_LEASE = "run", "directory"
CHOOSE_WAIT = 60.0  # seconds to wait for another process choosing a run


class RemoteRunDir(RunDir):
    """A run directory at a URL: its storage is fsspec's, its lock a lease."""

    def __init__(self, location: Location) -> None:  # no super(): no local path to open
        self.location = location
        self.path = Path(location.pure)  # for messages; nothing opens it
        self.run_id = location.name
        self.storage = location.storage()

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def clear_state(self) -> None:
        """Remove checkpoints, segments and the index; nothing is ever left half-written."""
        for folder in (CHECKPOINTS, SEGMENTS):
            self.storage.remove_tree(folder)
        self.storage.delete(INDEX)

    @contextmanager
    def locked(self) -> Iterator[None]:
        with leased(self.storage, RUN_LEASE, f"run {self.run_id}"):
            yield


def remote_run_ids(checkpoint: Location) -> list[str]:
    """Run ids under a URL checkpoint directory, newest first."""
    fs = checkpoint.fs
    fs.invalidate_cache()
    try:
        entries = fs.ls(checkpoint.key, detail=False)
    except FileNotFoundError:
        return []
    ids = [str(e).rstrip("/").rpartition("/")[2] for e in entries]
    return sorted((i for i in ids if RUN_ID.fullmatch(i)), key=run_order, reverse=True)


def remote_runs(checkpoint: Location) -> list[RemoteRunDir]:
    """Every run with a manifest, newest first."""
    runs = [RemoteRunDir(checkpoint.child(i)) for i in remote_run_ids(checkpoint)]
    return [r for r in runs if r.storage.get(MANIFEST) is not None]


def new_remote_run(checkpoint: Location) -> RemoteRunDir:
    """Claim a fresh run id by creating its claim record exclusively."""
    root = checkpoint.storage()
    stamp = time.strftime("run_%Y%m%d_%H%M%S")
    for attempt in range(1, 1000):
        run_id = stamp if attempt == 1 else f"{stamp}-{attempt}"
        if root.create(f"{run_id}/claim", b"{}"):
            return RemoteRunDir(checkpoint.child(run_id))
    raise CheckpointError(f"cannot create a run directory in {checkpoint}")


# -- one place for either kind of checkpoint directory --------------------------------------


def directory_lock(checkpoint: Location) -> AbstractContextManager[Any]:
    """Held while a run is chosen or created: flock locally, a lease on a URL."""
    if checkpoint.is_local:
        return rundir.directory_lock(checkpoint.path)
    label = f"checkpoint directory {checkpoint}"
    return leased(checkpoint.storage(), DIRECTORY_LEASE, label, wait=CHOOSE_WAIT)


def output_lease(output: Location) -> AbstractContextManager[Any]:
    """Hold a URL output for a whole run, as the lock file beside a local one does.

    The lease lives in the default checkpoint folder beside the output, keyed by a digest
    of the output's name (any name, any characters): two runs never write one object,
    whatever their checkpoint directories.
    """
    where = output.parent.child(DEFAULT_CHECKPOINT).storage()
    digest = hashlib.blake2b(output.name.encode(), digest_size=8).hexdigest()
    return leased(where, f"output-{digest}", f"a run writing {output}")


def run_at(checkpoint: Location, run_id: str) -> RunDir:
    """The run ``run_id`` names, refusing an id that could reach outside the directory."""
    if checkpoint.is_local:
        return RunDir(rundir.run_path(checkpoint.path, run_id))
    if not RUN_ID.fullmatch(run_id):
        raise ConfigError(
            f"{run_id!r} is not a run id; run ids look like run_20261123_143022 "
            f"(see `asyncproc list --checkpoint {checkpoint}`)"
        )
    return RemoteRunDir(checkpoint.child(run_id))


def new_run_dir(checkpoint: Location) -> RunDir:
    if checkpoint.is_local:
        return rundir.new_run_dir(checkpoint.path)
    return new_remote_run(checkpoint)


def run_url(run: RunDir) -> str:
    """Where a unit's task finds the run: a local path or the run's URL."""
    return run.location.url if isinstance(run, RemoteRunDir) else str(run.path)


def find_resumable(
    checkpoint: Location, input_url: str, output_url: str, *, completed: bool = False
) -> RunDir | None:
    """The newest unfinished run of this input into this output (see :mod:`.rundir`)."""
    if checkpoint.is_local:
        return rundir.find_resumable(checkpoint.path, input_url, output_url, completed=completed)
    for run in remote_runs(checkpoint):
        try:
            manifest = run.read()
        except CorruptCheckpointError as exc:
            raise CheckpointError(
                f"{exc}; it cannot be resumed: remove {run.location} or start over with --new-run"
            ) from exc
        if manifest.status is RunStatus.COMPLETED and not completed:
            continue
        if manifest.input.path == input_url and manifest.output == output_url:
            return run
    return None


# -- run management on a URL ---------------------------------------------------------------


class RemoteRuns(Cleanup):
    """``list``, ``show``, ``status``, ``delete`` and ``cleanup`` on a URL checkpoint dir."""

    def __init__(self, checkpoint: Location) -> None:
        self.checkpoint_dir = checkpoint

    def find(self, run_id: str) -> RemoteRunDir:
        if RUN_ID.fullmatch(run_id):
            run = RemoteRunDir(self.checkpoint_dir.child(run_id))
            if run.storage.get(MANIFEST) is not None:
                return run
        raise RunNotFoundError(
            f"no run {run_id!r} under {self.checkpoint_dir}; see `asyncproc list --checkpoint "
            f"{self.checkpoint_dir}` for the run ids"
        )

    def has(self, run_id: str) -> bool:
        try:
            self.find(run_id)
        except RunNotFoundError:
            return False
        return True

    def view(self, run_id: str) -> RunView:
        return _remote_view(self.find(run_id))

    def views(self) -> tuple[list[RunView], list[str]]:
        views, problems = [], []
        for run in remote_runs(self.checkpoint_dir):
            try:
                views.append(_remote_view(run))
            except (AsyncprocError, OSError) as exc:
                problems.append(f"run {run.run_id} skipped: {exc}")
        return views, problems

    def current(self) -> RunView:
        views, _ = self.views()
        running = [v for v in views if v.status is RunStatus.RUNNING]
        chosen = running or [v for v in views if v.status not in FINISHED]
        if not chosen:
            raise RunNotFoundError(f"no unfinished run under {self.checkpoint_dir}")
        return chosen[0]

    def failures(self, view: RunView, limit: int) -> list[dict[str, Any]]:
        if view.status in FINISHED:
            return []  # the failed-items file is an object beside the output
        run = self.find(view.run_id)
        return failures_from_segments(run.storage, unit_checkpoints(run, run.read()), limit)

    def delete(self, run_id: str) -> None:
        run = self.find(run_id)
        with directory_lock(self.checkpoint_dir), run.locked():
            for name in run.storage.list(""):
                if not name.startswith("lease/"):
                    run.storage.delete(name)


def _remote_view(run: RemoteRunDir) -> RunView:
    view = _view(run, run.read())
    held_by = holder(run.storage, RUN_LEASE)
    status = derive_status(run.read().status, held_by is not None)
    return replace(view, status=status, holder=held_by, path=run.path)
