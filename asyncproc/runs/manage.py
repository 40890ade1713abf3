"""Run management: list, find, view, delete and clean up the runs of a checkpoint directory.

Everything here only reads, except :meth:`Runs.delete` and :meth:`Runs.cleanup`, which
take the checkpoint directory's lock and then the run's own lock (the coordinator's
order), so a run can neither be chosen nor worked on while it is being removed. The
kinds of run (file, keyed) are handed in; each reads its own views.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._errors import AsyncprocError, RunError, RunNotFoundError
from ..storage.records import RunStatus
from .kinds import RunKind
from .locks import hold
from .rundir import directory_lock, run_order
from .views import FINISHED, RunView


class Runs:
    """The runs under one checkpoint directory, of the kinds given."""

    def __init__(self, checkpoint_dir: Path, kinds: Sequence[RunKind]) -> None:
        self.checkpoint_dir = checkpoint_dir
        self.kinds = tuple(kinds)

    def _kind_of(self, path: Path) -> RunKind | None:
        return next((k for k in self.kinds if (path / k.marker).is_file()), None)

    def paths(self) -> list[Path]:
        """Every run directory of a known kind, newest first."""
        if not self.checkpoint_dir.is_dir():
            return []
        found = [
            p
            for p in self.checkpoint_dir.iterdir()
            if not p.is_symlink() and self._kind_of(p) is not None
        ]
        return sorted(found, key=lambda p: run_order(p.name), reverse=True)

    def find(self, run_id: str) -> Path:
        """The directory of ``run_id``; RunNotFoundError with a hint if there is none."""
        path = self.checkpoint_dir / run_id
        bad = "/" in run_id or run_id in ("", ".", "..") or path.is_symlink()
        if bad or self._kind_of(path) is None:
            raise RunNotFoundError(
                f"no run {run_id!r} under {self.checkpoint_dir}; "
                f"see `asyncproc list --checkpoint {self.checkpoint_dir}` for the run ids"
            )
        return path

    def view(self, run_id: str) -> RunView:
        return self.view_at(self.find(run_id))

    def view_at(self, path: Path) -> RunView:
        kind = self._kind_of(path)
        if kind is None:
            raise RunNotFoundError(f"{path} is not a run directory")
        return kind.view(path)

    def views(self) -> tuple[list[RunView], list[str]]:
        """Every readable run, newest first, and a line for each run that could not be read."""
        views, problems = [], []
        for path in self.paths():
            try:
                views.append(self.view_at(path))
            except (AsyncprocError, OSError) as exc:
                problems.append(f"run {path.name} skipped: {exc}")
        return views, problems

    def current(self) -> RunView:
        """The newest run going on now, else the newest unfinished one."""
        views, _ = self.views()
        running = [v for v in views if v.status is RunStatus.RUNNING]
        chosen = running or [v for v in views if v.status not in FINISHED]
        if not chosen:
            raise RunNotFoundError(
                f"no unfinished run under {self.checkpoint_dir}; "
                "name one with `asyncproc status RUN_ID` or see `asyncproc list`"
            )
        return chosen[0]

    def failures(self, view: RunView, limit: int) -> list[dict[str, Any]]:
        kind = self._kind_of(view.path)
        return [] if kind is None else kind.failures(view, limit)

    # -- removing ------------------------------------------------------------------------

    def delete(self, run_id: str) -> None:
        """Remove a run's directory; RunLockedError if a process is working on it."""
        path = self.find(run_id)
        with directory_lock(self.checkpoint_dir), hold(path / "lock", f"run {run_id}"):
            shutil.rmtree(path)

    def cleanup_candidates(self, keep: int) -> list[RunView]:
        """Finished runs beyond the newest ``keep`` finished ones, oldest last."""
        views, _ = self.views()
        return [v for v in views if v.status in FINISHED][keep:]

    def cleanup(self, keep: int) -> list[str]:
        """Delete finished runs beyond the newest ``keep``; return the removed ids."""
        removed = []
        for view in self.cleanup_candidates(keep):
            try:
                self.delete(view.run_id)
            except RunError:
                continue  # started again since it was listed: not finished any more
            removed.append(view.run_id)
        return removed
