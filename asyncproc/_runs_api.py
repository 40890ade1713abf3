"""Run management from Python and the CLI: the same views and removals, every kind of run."""

from __future__ import annotations

import os
from pathlib import Path

from ._errors import ConfigError
from ._options import DEFAULT_CHECKPOINT
from ._public import public
from .keyed.view import KEYED_RUNS
from .runs import index
from .runs.fileruns import FILE_RUNS
from .runs.manage import Runs
from .runs.places import Places, distinct
from .runs.remote import RemoteRuns
from .runs.views import RunView
from .storage.location import Location

KINDS = (FILE_RUNS, KEYED_RUNS)


def runs_in(
    checkpoint_dir: str | os.PathLike[str] | Location = DEFAULT_CHECKPOINT,
) -> Runs | RemoteRuns:
    """The file and keyed runs under ``checkpoint_dir``, a folder or a URL."""
    if not isinstance(checkpoint_dir, Location):
        checkpoint_dir = Location(checkpoint_dir)
    if checkpoint_dir.local is None:
        return RemoteRuns(checkpoint_dir, KINDS)
    return Runs(checkpoint_dir.local, KINDS)


def places(
    checkpoint_dir: str | os.PathLike[str] | Location | None, *, everywhere: bool = True
) -> Places:
    """The directory given; or the default one and those of the run index (for the CLI):
    every run the index knows (``everywhere``), or those started from here."""
    if checkpoint_dir is not None:
        return Places([runs_in(checkpoint_dir)], explicit=True)
    noted = index.checkpoint_dirs(started_here=not everywhere)
    found = distinct([Path(DEFAULT_CHECKPOINT), *noted])
    return Places([runs_in(path) for path in found], explicit=False, everywhere=everywhere)


@public
def list_runs(checkpoint_dir: str | os.PathLike[str] = DEFAULT_CHECKPOINT) -> list[RunView]:
    """Every readable run (file or keyed) under ``checkpoint_dir``, newest first; never locks."""
    views, _ = runs_in(checkpoint_dir).views()
    return views


@public
def get_run(run_id: str, checkpoint_dir: str | os.PathLike[str] = DEFAULT_CHECKPOINT) -> RunView:
    """One run, with its per-shard progress; RunNotFoundError if there is none."""
    return runs_in(checkpoint_dir).view(run_id)


@public
def delete_run(run_id: str, checkpoint_dir: str | os.PathLike[str] = DEFAULT_CHECKPOINT) -> None:
    """Remove a run's directory; RunLockedError if a process is working on it."""
    runs_in(checkpoint_dir).delete(run_id)


@public
def cleanup_runs(
    keep: int, checkpoint_dir: str | os.PathLike[str] = DEFAULT_CHECKPOINT
) -> list[str]:
    """Remove all but the newest ``keep`` completed runs; return the removed ids."""
    if keep < 0:
        raise ConfigError(f"keep must be at least 0, got {keep}")
    return runs_in(checkpoint_dir).cleanup(keep)
