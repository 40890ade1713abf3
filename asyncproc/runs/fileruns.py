"""File runs as run management sees them: views read from the manifest and checkpoints.

A view never takes a run's lock: it reads the manifest and each shard's newest good
checkpoint (:meth:`ShardStore.load`), and asks the kernel whether the lock is held.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..storage.local import ShardStore
from ..storage.records import Manifest, RunStatus, ShardCheckpoint, ShardPlan
from .failures import failures_from_file, failures_from_segments
from .locks import holder_text, is_held
from .rundir import MANIFEST, RunDir
from .views import FINISHED, RunView, ShardView, derive_status


class FileRuns:
    """The kind of run ``asyncproc run`` makes (see :class:`~.kinds.RunKind`)."""

    marker = MANIFEST

    def view(self, path: Path) -> RunView:
        """Read one run; if it moved on meanwhile (merged, say), read it again."""
        run = RunDir(path)
        for _ in range(3):
            manifest = run.read()
            view = _view(run, manifest)
            if run.read().status is manifest.status:
                break
        return view

    def failures(self, view: RunView, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` failed items with their errors, newest index first."""
        if view.status in FINISHED:
            failed_file = (view.summary or {}).get("failed_items_file")
            return failures_from_file(Path(failed_file), limit) if failed_file else []
        run = RunDir(view.path)
        return failures_from_segments(run.path, shard_checkpoints(run, run.read()), limit)


FILE_RUNS = FileRuns()


def _view(run: RunDir, manifest: Manifest) -> RunView:
    held = is_held(run.path / "lock")
    status = derive_status(manifest.status, held)
    shards = () if manifest.status in FINISHED else _shard_views(run, manifest)
    processed, failed = _counts(manifest, shards)
    checkpoint_times = [s.checkpoint_at for s in shards if s.checkpoint_at is not None]
    updated = max([manifest.updated_at, *checkpoint_times])
    ended = manifest.updated_at if status in (*FINISHED, RunStatus.FAILED) else None
    return RunView(
        run_id=manifest.run_id, status=status, input=manifest.input.path,
        output=manifest.output, total_items=manifest.total_items, processed=processed,
        failed=failed, started_at=manifest.created_at, ended_at=ended, updated_at=updated,
        options=manifest.options, holder=holder_text(run.path / "lock") if held else None,
        path=run.path, shards=shards, summary=manifest.summary,
    )  # fmt: skip


def _counts(manifest: Manifest, shards: tuple[ShardView, ...]) -> tuple[int, int]:
    summary = manifest.summary or {}
    if manifest.status in FINISHED and "processed" in summary:
        return int(summary["processed"]), int(summary["failed"])
    return sum(s.processed for s in shards), sum(s.failed for s in shards)


def _shard_views(run: RunDir, manifest: Manifest) -> tuple[ShardView, ...]:
    return tuple(_shard_view(run, plan) for plan in manifest.shards)


def _shard_view(run: RunDir, plan: ShardPlan) -> ShardView:
    loaded = ShardStore(run.path, plan.shard_id).load()
    ck = loaded.checkpoint
    if ck is None:
        return ShardView(
            plan.shard_id, plan.start, plan.end, plan.items, 0, 0, 0,
            plan.start >= plan.end, None, loaded.problems,
        )  # fmt: skip
    return ShardView(
        plan.shard_id, plan.start, plan.end, plan.items, ck.processed, ck.failed,
        ck.attempts, ck.done, ck.updated_at, loaded.problems,
    )  # fmt: skip


def shard_checkpoints(run: RunDir, manifest: Manifest) -> list[ShardCheckpoint]:
    """The newest good checkpoint of every shard that has one."""
    found = (ShardStore(run.path, s.shard_id).load().checkpoint for s in manifest.shards)
    return [c for c in found if c is not None]
