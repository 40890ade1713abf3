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
from ..runs.locks import holder_text, is_held
from ..runs.views import FINISHED, RunView, derive_status, iso
from ..storage.localfs import LocalStorage
from ..storage.records import RunStatus, UnitCheckpoint
from ..storage.unitstore import UnitStore
from .records import KEYED_MANIFEST, LOADER_RECORD, KeyedRunRecord, LoaderRecord, LoaderStatus

DELETE_IT = "delete the run directory if you did not put it there"


def is_keyed(path: Path) -> bool:
    return (path / KEYED_MANIFEST).is_file()


def read_record(path: Path) -> KeyedRunRecord:
    """A keyed run's record, read without following a symlink.

    Run ids are taken from it and joined to the checkpoint directory, so a record that
    names another directory than its own (``../x``, say) is refused as forged.
    """
    try:
        raw = LocalStorage(path).get(KEYED_MANIFEST)
    except OSError as exc:
        raise CheckpointError(
            f"cannot read {path / KEYED_MANIFEST}: {exc.strerror}; {DELETE_IT}"
        ) from exc
    if raw is None:
        raise RunNotFoundError(f"no keyed run at {path}; see CheckpointManager.list_runs()")
    record = KeyedRunRecord.from_bytes(raw, f"keyed run {path.name}")
    if record.run_id != path.name:
        raise CorruptCheckpointError(
            f"keyed run {path} records the run id {record.run_id!r}, not its own: it was "
            f"renamed or forged; {DELETE_IT}"
        )
    return record


def _loaders(path: Path) -> list[Path]:
    root = path / "loaders"
    if root.is_symlink() or not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())


def _checkpoints(loader: Path, shards: int) -> list[UnitCheckpoint]:
    storage = LocalStorage(loader)
    found = (UnitStore(storage, k).load().checkpoint for k in range(shards))
    return [c for c in found if c is not None]


def loader_record(loader: Path) -> LoaderRecord | None:
    """A loader's record (total, status, error), or None if it has none or it is damaged."""
    try:
        raw = LocalStorage(loader).get(LOADER_RECORD)
        return None if raw is None else LoaderRecord.from_bytes(raw, f"loader {loader.name}")
    except AsyncprocError:
        return None


def _loader_counts(loader: Path, shards: int) -> dict[str, Any]:
    checkpoints = _checkpoints(loader, shards)
    processed = sum(c.processed for c in checkpoints)
    record = loader_record(loader)
    return {
        "status": record.status.value if record else LoaderStatus.IN_PROGRESS.value,
        "processed": processed,
        "failed": sum(c.failed for c in checkpoints),
        "total_items": record.total_items if record else None,
        "error": record.error if record else None,
        "checkpoint_at": iso(max((c.updated_at for c in checkpoints), default=None)),
    }


def keyed_view(path: Path) -> RunView:
    """A keyed run as a :class:`RunView` (``kind == "keyed"``, no byte-range shards)."""
    record = read_record(path)
    held = is_held(path / "lock")
    status = derive_status(record.status, held)
    loaders = {p.name: _loader_counts(p, record.shards) for p in _loaders(path)}
    times = [c.updated_at for p in _loaders(path) for c in _checkpoints(p, record.shards)]
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
        holder=holder_text(path / "lock") if held else None, path=path, kind="keyed",
        description=record.description,
    )  # fmt: skip


def keyed_failures(path: Path, limit: int) -> list[dict[str, Any]]:
    """The most recent recorded failures over every loader of a keyed run, newest first."""
    shards = read_record(path).shards
    found: list[dict[str, Any]] = []
    for loader in _loaders(path):
        entries = failures_from_segments(LocalStorage(loader), _checkpoints(loader, shards), limit)
        found += ({"loader": loader.name, **e} for e in entries)
    found.sort(key=lambda e: float(e.get("at", 0.0)), reverse=True)
    return found[:limit]


class KeyedRuns:
    """The kind of run :class:`~asyncproc.CheckpointManager` makes (see ``RunKind``)."""

    name = "keyed"
    marker = KEYED_MANIFEST

    def view(self, path: Path) -> RunView:
        return keyed_view(path)

    def failures(self, view: RunView, limit: int) -> list[dict[str, Any]]:
        return keyed_failures(view.path, limit)


KEYED_RUNS = KeyedRuns()
