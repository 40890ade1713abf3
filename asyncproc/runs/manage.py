"""Run management: list, find, view, delete and clean up the runs of a checkpoint directory.

Everything here only reads, except :meth:`Runs.delete` and its clean-up (:mod:`.cleanup`),
which take the checkpoint directory's lock and then the run's own lock (the coordinator's
order), so a run can neither be chosen nor worked on while it is being removed. The
kinds of run (file, keyed) are handed in; each reads its own views.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._errors import AsyncprocError, RunNotFoundError, speaking_cli
from ..storage.records import RunStatus
from .cleanup import Cleanup
from .kinds import RunKind
from .locks import hold, holder_text, is_held
from .rundir import directory_lock, run_order, see_runs
from .views import FINISHED, RunView, damaged_view


def current_of(views: Sequence[RunView]) -> RunView | None:
    """The newest run going on now, else the newest unfinished (and readable) one."""
    running = [v for v in views if v.status is RunStatus.RUNNING]
    unfinished = [v for v in views if v.status not in (*FINISHED, RunStatus.DAMAGED)]
    chosen = running or unfinished
    return max(chosen, key=lambda v: v.started_at) if chosen else None


class Runs(Cleanup):
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

    def has(self, run_id: str) -> bool:
        path = self.checkpoint_dir / run_id
        if "/" in run_id or run_id in ("", ".", "..") or path.is_symlink():
            return False  # a name from the command line is never followed out of the directory
        return self._kind_of(path) is not None

    def find(self, run_id: str) -> Path:
        """The directory of ``run_id``; RunNotFoundError with a hint if there is none."""
        if not self.has(run_id):
            raise RunNotFoundError(
                f"no run {run_id!r} under {self.checkpoint_dir}; "
                f"{see_runs(self.checkpoint_dir)} for the run ids"
            )
        return self.checkpoint_dir / run_id

    def view(self, run_id: str) -> RunView:
        """One run; a run whose record cannot be read is a ``damaged`` view."""
        return self._view_or_damaged(self.find(run_id))[0]

    def view_at(self, path: Path) -> RunView:
        kind = self._kind_of(path)
        if kind is None:
            raise RunNotFoundError(f"{path} is not a run directory")
        return kind.view(path)

    def _view_or_damaged(self, path: Path) -> tuple[RunView, str | None]:
        try:
            return self.view_at(path), None
        except RunNotFoundError:
            raise  # removed meanwhile
        except (AsyncprocError, OSError) as exc:
            return self._damaged(path, str(exc))

    def _damaged(self, path: Path, why: str) -> tuple[RunView, str]:
        kind = self._kind_of(path)
        holder = holder_text(path / "lock") if is_held(path / "lock") else None
        view = damaged_view(path, kind.name if kind else "file", why, holder)
        hint = f"; delete it with `asyncproc delete {path.name}`" if speaking_cli() else ""
        return view, f"run {path.name} is damaged: {why}{hint}"

    def views(self) -> tuple[list[RunView], list[str]]:
        """Every run, newest first (unreadable ones as ``damaged``), and a line for each
        damaged one saying why."""
        views, problems = [], []
        for path in self.paths():
            try:
                view, problem = self._view_or_damaged(path)
            except RunNotFoundError:
                continue
            views.append(view)
            if problem is not None:
                problems.append(problem)
        return views, problems

    def current(self) -> RunView:
        """The newest run going on now, else the newest unfinished one."""
        views, _ = self.views()
        chosen = current_of(views)
        if chosen is None:
            raise RunNotFoundError(
                f"no unfinished run under {self.checkpoint_dir}; name one with "
                f"{'`asyncproc status RUN_ID`' if speaking_cli() else 'get_run(run_id)'}"
            )
        return chosen

    def failures(self, view: RunView, limit: int) -> list[dict[str, Any]]:
        kind = self._kind_of(view.path)
        if kind is None or view.status is RunStatus.DAMAGED:
            return []
        return kind.failures(view, limit)

    # -- removing ------------------------------------------------------------------------

    def delete(self, run_id: str) -> None:
        """Remove a run's directory; RunLockedError if a process is working on it."""
        path = self.find(run_id)
        with directory_lock(self.checkpoint_dir), hold(path / "lock", f"run {run_id}"):
            shutil.rmtree(path)
