"""Run management: read run directories into frozen views; delete and clean up runs.

Everything here only reads, except :func:`delete_run` and :func:`cleanup`, which take
the checkpoint directory's lock and then the run's own lock (the coordinator's order),
so a run can neither be chosen nor worked on while it is being removed.

A view never takes a run's lock: it reads the manifest and each shard's newest good
checkpoint (:meth:`ShardStore.load`), and asks the kernel whether the lock is held.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ._errors import AsyncprocError, RunError, RunNotFoundError
from ._failures import failures_from_file, failures_from_segments
from ._keyed_view import is_keyed, keyed_failures, keyed_view
from ._locks import exclusive, holder_text, is_held
from ._records import Manifest, RunStatus, ShardCheckpoint, ShardPlan
from ._runs import RunDir, hold_lock, run_dirs
from ._store import ShardStore
from ._views import FINISHED, RunView, ShardView, derive_status

# -- reading -----------------------------------------------------------------------------


def view_run(run: RunDir) -> RunView:
    """Read one run without taking its lock.

    The manifest is read again after the shard checkpoints: if the run moved on meanwhile
    (merged and cleared its checkpoints, say), the view is taken again.
    """
    if is_keyed(run.path):
        return keyed_view(run.path)
    for _ in range(3):
        manifest = run.read()
        view = _view(run, manifest)
        if run.read().status is manifest.status:
            break
    return view


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


def list_runs(checkpoint_dir: Path) -> tuple[list[RunView], list[str]]:
    """Every readable run, newest first, and a line for each run that could not be read."""
    views, problems = [], []
    for run in all_run_dirs(checkpoint_dir):
        try:
            views.append(view_run(run))
        except (AsyncprocError, OSError) as exc:
            problems.append(f"run {run.run_id} skipped: {exc}")
    return views, problems


def all_run_dirs(checkpoint_dir: Path) -> list[RunDir]:
    """File runs and keyed runs, newest first."""
    if not checkpoint_dir.is_dir():
        return []
    keyed = [RunDir(p) for p in checkpoint_dir.iterdir() if is_keyed(p)]
    return sorted([*run_dirs(checkpoint_dir), *keyed], key=_newest, reverse=True)


def _newest(run: RunDir) -> tuple[str, int]:
    base, tail = run.run_id[:19], run.run_id[20:]  # run_YYYYMMDD_HHMMSS[-n]
    return base, int(tail) if tail.isdigit() else 0


def find_run(checkpoint_dir: Path, run_id: str) -> RunDir:
    """The run directory of ``run_id``; RunNotFoundError with a hint if there is none."""
    path = checkpoint_dir / run_id
    exists = (path / "manifest.json").is_file() or is_keyed(path)
    if "/" in run_id or run_id in ("", ".", "..") or not exists:
        raise RunNotFoundError(
            f"no run {run_id!r} under {checkpoint_dir}; "
            f"see `asyncproc list --checkpoint {checkpoint_dir}` for the run ids"
        )
    return RunDir(path)


def current_run(checkpoint_dir: Path) -> RunView:
    """The newest run going on now, else the newest unfinished one."""
    views, _ = list_runs(checkpoint_dir)
    running = [v for v in views if v.status is RunStatus.RUNNING]
    unfinished = [v for v in views if v.status not in FINISHED]
    chosen = running or unfinished
    if not chosen:
        raise RunNotFoundError(
            f"no unfinished run under {checkpoint_dir}; "
            "name one with `asyncproc status RUN_ID` or see `asyncproc list`"
        )
    return chosen[0]


def failures_of(view: RunView, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` failed items of a run with their errors, newest index first."""
    if view.kind == "keyed":
        return keyed_failures(view.path, limit)
    run = RunDir(view.path)
    if view.status in FINISHED:
        failed_file = (view.summary or {}).get("failed_items_file")
        return failures_from_file(Path(failed_file), limit) if failed_file else []
    manifest = run.read()
    return failures_from_segments(run.path, shard_checkpoints(run, manifest), limit)


# -- removing ----------------------------------------------------------------------------


def delete_run(checkpoint_dir: Path, run_id: str) -> None:
    """Remove a run's directory; RunLockedError if a process is working on it."""
    run = find_run(checkpoint_dir, run_id)
    directory_lock = hold_lock(
        checkpoint_dir / ".lock", f"checkpoint directory {checkpoint_dir}", wait=True
    )
    with directory_lock, exclusive(run.path / "lock", f"run {run_id}"):
        shutil.rmtree(run.path)


def cleanup_candidates(checkpoint_dir: Path, keep: int) -> list[RunView]:
    """Finished runs beyond the newest ``keep`` finished ones, oldest last."""
    views, _ = list_runs(checkpoint_dir)
    finished = [v for v in views if v.status in FINISHED]
    return finished[keep:]


def cleanup(checkpoint_dir: Path, keep: int) -> list[str]:
    """Delete finished runs beyond the newest ``keep``; return the removed ids."""
    removed = []
    for view in cleanup_candidates(checkpoint_dir, keep):
        try:
            delete_run(checkpoint_dir, view.run_id)
        except RunError:
            continue  # started again since it was listed: not finished any more
        removed.append(view.run_id)
    return removed
