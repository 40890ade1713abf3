"""Run management on an fsspec URL (``s3://bucket/ck``, ``memory://ck``), and URL outputs.

The runs themselves are a :class:`~.store.UrlRunStore`'s: the same layout as on local
disk, locked by leases (:mod:`.lease`). Here are ``list``, ``show``, ``status``,
``delete`` and ``cleanup`` on them, and the lease that holds a URL output for a run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from .._errors import AsyncprocError, RunNotFoundError
from .._options import DEFAULT_CHECKPOINT
from ..storage.location import Location
from ..storage.records import RunStatus
from .cleanup import Cleanup
from .kinds import RunKind
from .lease import leased
from .rundir import RUN_ID, RunDir
from .store import UrlRunStore
from .views import FINISHED, RunView


def output_lease(output: Location) -> AbstractContextManager[Any]:
    """Hold a URL output for a whole run, as the lock file beside a local one does.

    The lease lives in the default checkpoint folder beside the output, keyed by a digest
    of the output's name (any name, any characters): two runs never write one object,
    whatever their checkpoint directories.
    """
    where = output.parent.child(DEFAULT_CHECKPOINT).storage()
    digest = hashlib.blake2b(output.name.encode(), digest_size=8).hexdigest()
    return leased(where, f"output-{digest}", f"a run writing {output}")


# -- run management on a URL ---------------------------------------------------------------


class RemoteRuns(Cleanup):
    """``list``, ``show``, ``status``, ``delete`` and ``cleanup`` on a URL checkpoint dir."""

    def __init__(self, checkpoint: Location, kinds: Sequence[RunKind]) -> None:
        self.checkpoint_dir = checkpoint
        self.store = UrlRunStore(checkpoint)
        self.kinds = tuple(kinds)

    def _kind_of(self, run: RunDir) -> RunKind | None:
        return next((k for k in self.kinds if run.storage.get(k.marker) is not None), None)

    def _runs(self) -> list[tuple[RunDir, RunKind]]:
        found = ((r, self._kind_of(r)) for r in map(self.store.run, self.store.run_ids()))
        return [(run, kind) for run, kind in found if kind is not None]

    def find(self, run_id: str) -> tuple[RunDir, RunKind]:
        if RUN_ID.fullmatch(run_id):
            run = self.store.run(run_id)
            kind = self._kind_of(run)
            if kind is not None:
                return run, kind
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
        run, kind = self.find(run_id)
        return kind.view_run(run)

    def views(self) -> tuple[list[RunView], list[str]]:
        views, problems = [], []
        for run, kind in self._runs():
            try:
                views.append(kind.view_run(run))
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
        run, kind = self.find(view.run_id)
        return kind.run_failures(run, view, limit)

    def delete(self, run_id: str) -> None:
        run, _ = self.find(run_id)
        with self.store.directory_lock(), run.locked():
            for name in run.storage.list(""):
                if not name.startswith("lease/"):
                    run.storage.delete(name)
