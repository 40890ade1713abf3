"""File runs as run management sees them: views read from the manifest and checkpoints.

A view never takes a run's lock: it reads the manifest and each unit's newest good
checkpoint (:meth:`UnitStore.load`), and asks the run's ground who holds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..storage.records import Manifest, RunStatus, UnitCheckpoint, UnitPlan
from .failures import failures_from_file, failures_from_segments
from .live import read_live
from .rundir import MANIFEST, RunDir, failed_items_path, local_run
from .views import FINISHED, RunView, UnitView, derive_status


class FileRuns:
    """The kind of run ``asyncproc run`` makes (see :class:`~.kinds.RunKind`)."""

    name = "file"
    marker = MANIFEST

    def view(self, path: Path) -> RunView:
        return self.view_run(local_run(path))

    def view_run(self, run: RunDir) -> RunView:
        """Read one run; if it moved on meanwhile (merged, say), read it again."""
        for _ in range(3):
            manifest = run.read()
            view = file_view(run, manifest)
            if run.read().status is manifest.status:
                break
        return view

    def failures(self, view: RunView, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` failed items with their errors, newest index first."""
        if view.status in FINISHED:
            # The run's own failed-items file, never another path a summary may name.
            failed_file = (view.summary or {}).get("failed_items_file")
            own = failed_items_path(Path(view.output))
            return failures_from_file(own, limit) if failed_file == str(own) else []
        return self.run_failures(local_run(view.path), view, limit)

    def run_failures(self, run: RunDir, view: RunView, limit: int) -> list[dict[str, Any]]:
        """Failures still in the run's segments; none once it finished (its failed-items
        file is then beside the output, an object when the output is at a URL)."""
        if view.status in FINISHED:
            return []
        return failures_from_segments(run.storage, unit_checkpoints(run, run.read()), limit)


FILE_RUNS = FileRuns()


def file_view(run: RunDir, manifest: Manifest) -> RunView:
    """A file run as run management shows it, whatever storage it is on."""
    held_by = run.holder()
    status = derive_status(manifest.status, held_by is not None)
    units = () if manifest.status in FINISHED else _unit_views(run, manifest)
    processed, failed = _counts(manifest, units)
    checkpoint_times = [u.checkpoint_at for u in units if u.checkpoint_at is not None]
    updated = max([manifest.updated_at, *checkpoint_times])
    ended = manifest.updated_at if status in (*FINISHED, RunStatus.FAILED) else None
    return RunView(
        run_id=manifest.run_id, status=status, input=manifest.input.path,
        output=manifest.output, total_items=manifest.total_items, processed=processed,
        failed=failed, started_at=manifest.created_at, ended_at=ended, updated_at=updated,
        options=manifest.options, holder=held_by,
        path=run.path, units=units, summary=manifest.summary,
        live=read_live(run.storage) if status is RunStatus.RUNNING else None,
        resumed_at=manifest.resumed_at, done_at_resume=manifest.done_at_resume,
    )  # fmt: skip


def _counts(manifest: Manifest, units: tuple[UnitView, ...]) -> tuple[int, int]:
    summary = manifest.summary or {}
    if manifest.status in FINISHED and "processed" in summary:
        return int(summary["processed"]), int(summary["failed"])
    return sum(u.processed for u in units), sum(u.failed for u in units)


def _extents(manifest: Manifest) -> list[tuple[UnitPlan, int, int]]:
    """Each unit with its end and its item count (a unit ends where the next starts)."""
    units = sorted(manifest.units, key=lambda u: u.start)
    ends = [*((u.start, u.first_index) for u in units[1:]), (manifest.input.size,
                                                             manifest.total_items)]  # fmt: skip
    return [
        (u, end, end_index - u.first_index) for u, (end, end_index) in zip(units, ends, strict=True)
    ]


def _unit_views(run: RunDir, manifest: Manifest) -> tuple[UnitView, ...]:
    return tuple(_unit_view(run, *entry) for entry in _extents(manifest))


def _unit_view(run: RunDir, unit: UnitPlan, end: int, items: int) -> UnitView:
    loaded = run.unit_store(unit.unit_id).load(unit.start, end, check_bytes=False)  # a view
    ck = loaded.checkpoint
    if ck is None:
        return UnitView(unit.unit_id, unit.start, end, items, 0, 0, 0, False, None, loaded.problems)
    return UnitView(
        unit.unit_id, unit.start, end, items, ck.processed, ck.failed, ck.attempts,
        ck.offset >= end, ck.updated_at, loaded.problems,
    )  # fmt: skip


def unit_checkpoints(run: RunDir, manifest: Manifest) -> list[UnitCheckpoint]:
    """The newest good checkpoint of every unit that has one (for a view: its segments'
    bytes are not read to check their CRCs)."""
    found = (
        run.unit_store(unit.unit_id).load(unit.start, end, check_bytes=False).checkpoint
        for unit, end, _ in _extents(manifest)
    )
    return [c for c in found if c is not None]
