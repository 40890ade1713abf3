"""Keyed runs as management views, so ``asyncproc list/show/status/delete/cleanup`` see them.

Read-only and lock-free like file views: the run record, each loader's record and each
loader shard's newest good checkpoint. ``processed`` counts acknowledged keys;
``failed`` counts the keys failing now, each once (a key that failed and later
succeeded on a resume counts as processed only). ``total_items`` is the sum of the
totals given to ``set_total_items`` (a loader without one counts its processed keys).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._errors import AsyncprocError, CheckpointError, CorruptCheckpointError, RunNotFoundError
from ..runs.failures import failures_from_segments
from ..runs.rundir import RunDir, local_run
from ..runs.views import FINISHED, RunView, derive_status, iso
from ..storage.protocol import Storage
from ..storage.records import RunStatus, UnitCheckpoint
from ..storage.subfolder import Subfolder
from ..storage.unitstore import UnitStore
from .records import KEYED_MANIFEST, LOADER_RECORD, KeyedRunRecord, LoaderRecord, LoaderStatus

DELETE_IT = "delete the run directory if you did not put it there"


LOADERS = "loaders/"


def read_record(run: RunDir) -> KeyedRunRecord:
    """A keyed run's record, read without following a symlink.

    Run ids are taken from it and joined to the checkpoint directory, so a record that
    names another directory than its own (``../x``, say) is refused as forged.
    """
    try:
        raw = run.storage.get(KEYED_MANIFEST)
    except OSError as exc:
        raise CheckpointError(
            f"cannot read {run.path / KEYED_MANIFEST}: {exc.strerror}; {DELETE_IT}"
        ) from exc
    if raw is None:
        raise RunNotFoundError(f"no keyed run at {run.path}; see CheckpointManager.list_runs()")
    record = KeyedRunRecord.from_bytes(raw, f"keyed run {run.run_id}")
    if record.run_id != run.run_id:
        raise CorruptCheckpointError(
            f"keyed run {run.path} records the run id {record.run_id!r}, not its own: it was "
            f"renamed or forged; {DELETE_IT}"
        )
    return record


def loader_names(run: RunDir) -> list[str]:
    """The loaders that saved anything, by name (symlinks are never listed)."""
    names = {name[len(LOADERS) :].partition("/")[0] for name in run.storage.list(LOADERS)}
    return sorted(names)


def loader_storage(run: RunDir, name: str) -> Storage:
    """A loader's folder of the run, as a storage of its own."""
    return Subfolder(run.storage, f"{LOADERS}{name}/")


def _checkpoints(loader: Storage, shards: int) -> list[UnitCheckpoint]:
    found = (UnitStore(loader, k).load(check_bytes=False).checkpoint for k in range(shards))
    return [c for c in found if c is not None]


def loader_record(loader: Storage, name: str) -> LoaderRecord | None:
    """A loader's record (total, status, error), or None if it has none or it is damaged."""
    try:
        raw = loader.get(LOADER_RECORD)
        return None if raw is None else LoaderRecord.from_bytes(raw, f"loader {name}")
    except AsyncprocError:
        return None


def _loader_counts(loader: Storage, name: str, shards: int) -> dict[str, Any]:
    checkpoints = _checkpoints(loader, shards)
    processed = sum(c.processed for c in checkpoints)
    record = loader_record(loader, name)
    return {
        "status": record.status.value if record else LoaderStatus.IN_PROGRESS.value,
        "processed": processed,
        "failed": sum(c.failed for c in checkpoints),
        "total_items": record.total_items if record else None,
        "error": record.error if record else None,
        "checkpoint_at": iso(max((c.updated_at for c in checkpoints), default=None)),
        "times": [c.updated_at for c in checkpoints],
    }


def keyed_view(run: RunDir) -> RunView:
    """A keyed run as a :class:`RunView` (``kind == "keyed"``, no byte-range shards)."""
    record = read_record(run)
    held_by = run.holder()
    status = derive_status(record.status, held_by is not None)
    loaders = {
        n: _loader_counts(loader_storage(run, n), n, record.shards) for n in loader_names(run)
    }
    times = [t for counts in loaders.values() for t in counts.pop("times")]
    total = sum(c["total_items"] if c["total_items"] is not None else c["processed"]
                for c in loaders.values())  # fmt: skip
    options = {"config": record.config, "shards": record.shards, "error": record.error,
               "description": record.description, "loaders": loaders}  # fmt: skip
    return RunView(
        run_id=record.run_id, status=status, input="keyed: " + ", ".join(loaders),
        output="", total_items=total, processed=sum(c["processed"] for c in loaders.values()),
        failed=sum(c["failed"] for c in loaders.values()), started_at=record.created_at,
        ended_at=record.updated_at if status in (*FINISHED, RunStatus.FAILED) else None,
        updated_at=max([record.updated_at, *times]), options=options,
        holder=held_by, path=run.path, kind="keyed", description=record.description,
    )  # fmt: skip


def keyed_failures(run: RunDir, limit: int) -> list[dict[str, Any]]:
    """The most recent recorded failures over every loader of a keyed run, newest first."""
    shards = read_record(run).shards
    found: list[dict[str, Any]] = []
    for name in loader_names(run):
        loader = loader_storage(run, name)
        entries = failures_from_segments(loader, _checkpoints(loader, shards), limit)
        found += ({"loader": name, **e} for e in entries)
    found.sort(key=lambda e: float(e.get("at", 0.0)), reverse=True)
    return found[:limit]


class KeyedRuns:
    """The kind of run :class:`~asyncproc.CheckpointManager` makes (see ``RunKind``)."""

    name = "keyed"
    marker = KEYED_MANIFEST

    def view(self, path: Path) -> RunView:
        return keyed_view(local_run(path))

    def view_run(self, run: RunDir) -> RunView:
        return keyed_view(run)

    def failures(self, view: RunView, limit: int) -> list[dict[str, Any]]:
        return keyed_failures(local_run(view.path), limit)

    def run_failures(self, run: RunDir, view: RunView, limit: int) -> list[dict[str, Any]]:
        return keyed_failures(run, limit)


KEYED_RUNS = KeyedRuns()
