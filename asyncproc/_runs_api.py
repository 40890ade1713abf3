"""Run management from Python: the same views and removals as the CLI commands."""

from __future__ import annotations

import os
from pathlib import Path

from ._errors import ConfigError
from ._manage import cleanup as _cleanup
from ._manage import delete_run as _delete_run
from ._manage import find_run, view_run
from ._manage import list_runs as _list_runs
from ._views import RunView

DEFAULT_CHECKPOINT = ".asyncproc"


def list_runs(checkpoint_dir: str | os.PathLike[str] = DEFAULT_CHECKPOINT) -> list[RunView]:
    """Every readable run (file or keyed) under ``checkpoint_dir``, newest first; never locks."""
    views, _ = _list_runs(Path(checkpoint_dir))
    return views


def get_run(run_id: str, checkpoint_dir: str | os.PathLike[str] = DEFAULT_CHECKPOINT) -> RunView:
    """One run, with its per-shard progress; RunNotFoundError if there is none."""
    return view_run(find_run(Path(checkpoint_dir), run_id))


def delete_run(run_id: str, checkpoint_dir: str | os.PathLike[str] = DEFAULT_CHECKPOINT) -> None:
    """Remove a run's directory; RunLockedError if a process is working on it."""
    _delete_run(Path(checkpoint_dir), run_id)


def cleanup_runs(
    keep: int, checkpoint_dir: str | os.PathLike[str] = DEFAULT_CHECKPOINT
) -> list[str]:
    """Remove all but the newest ``keep`` completed runs; return the removed ids."""
    if keep < 0:
        raise ConfigError(f"keep must be at least 0, got {keep}")
    return _cleanup(Path(checkpoint_dir), keep)
