"""The older loader checkpoint system's own API, sync and thread-safe, over the keyed layer.

Code written for that tool runs with only its import line changed (``from
asyncproc.compat import CheckpointManager, LoaderCheckpoint, checkpoint_loader``). Every
call goes to the native async classes (:class:`~.run.CheckpointManager`,
:class:`~.loader.LoaderCheckpoint`) on one event loop in a daemon thread
(:class:`~.bridge.Bridge`): runs, locks, shards, the commit protocol and the views are
theirs; this module only translates the shape (blocking calls, dicts, the older names).

Marks are made durable in groups as they come (:class:`~.bridge.Flusher`), and every
``checkpoint_interval``-th mark waits for a save, so a SIGKILL redoes only the marks of
the save in progress and at worst ``checkpoint_interval`` marks, plus the items in flight.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from .._errors import RunError, RunLockedError
from ..runs.manage import Runs
from ..runs.rundir import local_run, make_checkpoint_dir, require_trusted, run_path
from ..storage.records import RunStatus
from .bridge import Bridge, Flusher
from .loader import LoaderCheckpoint as NativeLoader
from .records import Key, LoaderStatus, check_name, config_differences
from .run import CheckpointManager as NativeManager
from .run import KeyedRun, KeyedRunInfo, normalise
from .view import KEYED_RUNS, keyed_view, loader_record, loader_storage

log = logging.getLogger("asyncproc")
T = TypeVar("T")

DEFAULT_INTERVAL = 25
NO_RUN = "no active run: call start_new_run() or resume_run() first"


def say(line: str, message: str, *args: object, level: int = logging.INFO) -> None:
    """Through logging when the program configured it; else ``line`` on stdout, the one
    line the older tool printed (its users watch for them, and an unconfigured logger
    would drop INFO)."""
    if log.hasHandlers():
        log.log(level, message, *args)
    else:
        print(line, flush=True)


def as_key(item_id: object) -> Key:
    """The older tool took any id; keys are str or int, so anything else becomes its str."""
    if isinstance(item_id, str) or (isinstance(item_id, int) and not isinstance(item_id, bool)):
        return item_id
    return str(item_id)


def _when(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts).isoformat()


class CheckpointManager:
    """Runs under ``checkpoint_dir``, the older tool's way: one current run at a time."""

    def __init__(self, checkpoint_dir: str | os.PathLike[str] = "checkpoints") -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        make_checkpoint_dir(self.checkpoint_dir)
        require_trusted(self.checkpoint_dir)  # refused now, not at the first run
        self.current_run_id: str | None = None
        self._native = NativeManager(self.checkpoint_dir)
        self._bridge: Bridge | None = None
        self._run: KeyedRun | None = None
        self._flushers: dict[str, Flusher] = {}
        self._completed: str | None = None  # the current run, completed: reopened on use
        self._lock = threading.RLock()
        atexit.register(_close_at_exit, weakref.ref(self))

    # -- runs -------------------------------------------------------------------------

    def start_new_run(
        self, run_description: str | None = None, config: dict[str, Any] | None = None
    ) -> str:
        """Start a new run (the current one, if any, is left resumable); its id."""
        self._leave()
        run = self._call(partial(
            self._native.start_run, config, new_run=True,
            description=run_description or "Data loading run",
        ))  # fmt: skip
        self._enter(run)
        say(f"🚀 Started new run: {run.run_id}", "started new run %s under %s", run.run_id,
            self.checkpoint_dir)  # fmt: skip
        if config:
            summary = self._format_config_summary(config)
            say(f"📋 Saved configuration: {summary}", "run %s config: %s", run.run_id, summary)
        return run.run_id

    def resume_run(self, run_id: str | None = None) -> str | None:
        """Resume ``run_id``, else the newest incomplete run; None when there is none."""
        info = self._resumable(run_id)
        if info is None:
            return None
        self._leave()
        self._enter(self._call(partial(self._native.start_run, info.config, run_id=info.run_id)))
        say(f"📂 Resuming run: {info.run_id}", "resuming run %s under %s", info.run_id,
            self.checkpoint_dir)  # fmt: skip
        return info.run_id

    def _resumable(self, run_id: str | None) -> KeyedRunInfo | None:
        if run_id is not None:
            run_path(self.checkpoint_dir, run_id)  # an id that could lead elsewhere is refused
        runs = self._native.list_runs()
        if run_id is None:
            found = next((r for r in runs if r.status is not RunStatus.COMPLETED), None)
            if found is None:
                say("No incomplete runs found", "no incomplete run under %s",
                    self.checkpoint_dir)  # fmt: skip
            return found
        named = next((r for r in runs if r.run_id == run_id), None)
        if named is None or named.status is RunStatus.COMPLETED:
            why = "not found" if named is None else "already completed"
            log.warning("run %s %s under %s", run_id, why, self.checkpoint_dir)
            return None
        return named

    def complete_run(self) -> None:
        """Save every loader and mark the current run completed. It stays current, as
        with the older tool: a loader opened afterwards reopens it (it stays completed)."""
        with self._lock:
            if self._run is not None:
                self._end(self._run.complete)
                self._completed = self.current_run_id
                say(f"🎉 Run {self.current_run_id} completed successfully",
                    "run %s completed", self.current_run_id)  # fmt: skip

    def close(self) -> None:
        """Save every loader and release the current run, leaving it resumable."""
        with self._lock:
            self._leave()
            if self._bridge is not None:
                self._bridge.close()
                self._bridge = None

    def get_run_config(self) -> dict[str, Any]:
        """The config the current run was started with ({} without a run)."""
        if self._run is not None:
            return self._run.config
        info = self._info()
        return dict(info.config) if info else {}

    def validate_config_compatibility(self, current_config: dict[str, Any]) -> bool:
        """False when a key present in both the run's config and this one differs."""
        stored = self.get_run_config()
        given = normalise(current_config)
        both = {k: v for k, v in given.items() if v is not None and stored.get(k) is not None}
        differences = config_differences({k: stored[k] for k in both}, both)
        for difference in differences:
            log.warning("config incompatible with run %s: %s", self.current_run_id, difference)
        return not differences

    @staticmethod
    def _format_config_summary(config: dict[str, Any]) -> str:
        """A config on one line, for a message: ``key=value`` for each key that is set
        (not None, False, 0 or ""), in the config's order; ``default settings`` if none
        is. The older tool's main module prints it."""
        shown = [f"{key}={value}" for key, value in config.items()
                 if value is not None and value not in (False, "")]  # fmt: skip
        return ", ".join(shown) if shown else "default settings"

    def list_runs(self) -> list[dict[str, Any]]:
        """Every keyed run here, newest first: run_id, start_time, status, description,
        config."""
        return [
            {"run_id": r.run_id, "start_time": _when(r.started_at), "status": r.status.value,
             "description": r.description or "", "config": r.config}
            for r in self._native.list_runs()
        ]  # fmt: skip

    def cleanup_old_runs(self, keep_last_n: int = 5) -> None:
        """Delete all but the newest ``keep_last_n`` runs (never one a process holds)."""
        runs = Runs(self.checkpoint_dir, (KEYED_RUNS,))
        for info in self.list_runs()[max(keep_last_n, 0) :]:
            if info["run_id"] == self.current_run_id and self._run is not None:
                continue
            try:
                runs.delete(info["run_id"])
            except RunLockedError as exc:
                log.warning("kept run %s: %s", info["run_id"], exc)
                continue
            say(f"🗑️ Cleaned up old run: {info['run_id']}", "removed old run %s", info["run_id"])

    def get_run_summary(self) -> dict[str, Any]:
        """The current run: status, start, config, description, and each loader's status,
        progress and error ({} without a run)."""
        if self.current_run_id is None:
            return {}
        self._save_all()
        view = keyed_view(local_run(self.checkpoint_dir / self.current_run_id))
        loaders = {name: _loader_summary(self._live(name, counts)) for name, counts in
                   view.options["loaders"].items()}  # fmt: skip
        return {
            "run_id": view.run_id, "status": view.status.value,
            "start_time": _when(view.started_at), "description": view.description or "",
            "config": view.options["config"], "loaders": loaders,
        }  # fmt: skip

    # -- loaders ----------------------------------------------------------------------

    def mark_loader_complete(self, loader_name: str) -> None:
        """Save the loader's marks and record it as completed."""
        loader = self.native_loader(loader_name)
        self._call(partial(loader.set_status, LoaderStatus.COMPLETED))
        say(f"✅ Marked {loader_name} as completed", "loader %s completed", loader_name)

    def mark_loader_failed(self, loader_name: str, error_message: str) -> None:
        """Save the loader's marks and record it as failed with ``error_message``."""
        loader = self.native_loader(loader_name)
        self._call(partial(loader.set_status, LoaderStatus.FAILED, str(error_message)))
        first = str(error_message).split("\n", 1)[0]
        say(f"❌ Marked {loader_name} as failed: {first}", "loader %s failed: %s", loader_name,
            first, level=logging.WARNING)  # fmt: skip

    def is_loader_completed(self, loader_name: str) -> bool:
        """Whether the current run recorded ``loader_name`` as completed."""
        if self.current_run_id is None:
            return False
        check_name(loader_name)  # it becomes a path below the run
        with self._lock:
            if self._run is not None and loader_name in self._flushers:
                status = self.native_loader(loader_name).status
                return status is LoaderStatus.COMPLETED
        run = local_run(self.checkpoint_dir / self.current_run_id)
        record = loader_record(loader_storage(run, loader_name), loader_name)
        return record is not None and record.status is LoaderStatus.COMPLETED

    def native_loader(self, name: str, interval: int = DEFAULT_INTERVAL) -> NativeLoader:
        """The async loader ``name`` of the current run, opened (and flushed) once."""
        with self._lock:
            run = self._run if self._run is not None else self._reopen()
            loader = self._call(partial(run.loader, name, interval=interval))
            if name not in self._flushers:
                self._flushers[name] = Flusher(self._bridge_now(), loader)
            return loader

    def flusher(self, name: str) -> Flusher:
        return self._flushers[name]

    def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run an async call of the native layer from this thread, blocking."""
        return self._call(fn)

    # -- internals --------------------------------------------------------------------

    def _bridge_now(self) -> Bridge:
        if self._bridge is None:
            self._bridge = Bridge()
        return self._bridge

    def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        return self._bridge_now().call(fn)

    def _info(self) -> KeyedRunInfo | None:
        runs = self._native.list_runs()
        return next((r for r in runs if r.run_id == self.current_run_id), None)

    def _enter(self, run: KeyedRun) -> None:
        with self._lock:
            self._run, self.current_run_id, self._completed = run, run.run_id, None

    def _reopen(self) -> KeyedRun:
        """The current run, completed by :meth:`complete_run`, opened again to be used."""
        run_id = self._completed
        if run_id is None or run_id != self.current_run_id:
            raise RunError(NO_RUN)
        info = self._info()
        config = info.config if info is not None else {}
        run = self._call(partial(self._native.start_run, config, run_id=run_id, completed=True))
        self._run = run
        return run

    def _leave(self) -> None:
        """Release the current run, if any, leaving it interrupted (resumable); a run
        reopened after :meth:`complete_run` is completed again."""
        with self._lock:
            if self._run is not None:
                self._end(self._run.complete if self._completed else self._run.close)

    def _end(self, finish: Callable[[], Awaitable[None]]) -> None:
        for flusher in self._flushers.values():
            self._call(flusher.stop)
        self._call(finish)
        self._run = None
        self._flushers.clear()

    def _live(self, name: str, counts: dict[str, Any]) -> dict[str, Any]:
        """A loader open here counts the keys still failing; on disk, failures recorded."""
        with self._lock:
            if self._run is None or name not in self._flushers:
                return counts
            stats = self.native_loader(name).stats()
        return {**counts, "processed": stats.processed, "failed": stats.failures}

    def _save_all(self) -> None:
        with self._lock:
            if self._run is not None:
                self._call(self._run.save_progress)


def _loader_summary(counts: dict[str, Any]) -> dict[str, Any]:
    total, done = counts["total_items"], counts["processed"]
    return {
        "status": counts["status"], "timestamp": counts["checkpoint_at"], "error": counts["error"],
        "progress": {"processed_count": done, "failure_count": counts["failed"],
                     "total_items": total or 0,
                     "completion_percentage": 100.0 * done / total if total else 0},
    }  # fmt: skip


def _close_at_exit(ref: weakref.ref[CheckpointManager]) -> None:
    """At interpreter exit, save what is marked and leave the run resumable."""
    manager = ref()
    if manager is not None:
        try:
            manager.close()
        except Exception as exc:  # exiting anyway: say so, do not raise
            log.warning("could not save checkpoints at exit: %s", exc)


class LoaderCheckpoint:
    """One loader's checkpoint in the manager's current run: sync and thread-safe.

    ``mark_processed`` and ``mark_failed`` return at once; the marks become durable in
    groups within moments, every ``checkpoint_interval``-th waits until they are, and
    ``save_progress`` waits for all of them.
    """

    def __init__(
        self, checkpoint_manager: CheckpointManager, loader_name: str,
        checkpoint_interval: int = DEFAULT_INTERVAL,
    ) -> None:  # fmt: skip
        self.checkpoint_manager, self.loader_name = checkpoint_manager, loader_name
        self._native = checkpoint_manager.native_loader(loader_name, checkpoint_interval)
        self._native.interval = checkpoint_interval
        self._flusher = checkpoint_manager.flusher(loader_name)
        if self._native.status is LoaderStatus.FAILED:  # being run again
            self._native.status, self._native.error = LoaderStatus.IN_PROGRESS, None
        self.current_batch = 0
        done = self._native.stats().processed
        if done:
            say(f"📂 Loaded {loader_name} progress: {done} items processed",
                "loader %s: %d items processed before", loader_name, done)  # fmt: skip

    def is_processed(self, item_id: object) -> bool:
        """Whether ``item_id`` was marked processed (in this run, before or after a resume)."""
        return self._native.is_processed(as_key(item_id))

    def mark_processed(self, item_id: object) -> None:
        self._flusher.check()
        if self._native.note_processed(as_key(item_id)):
            self.save_progress()

    def mark_failed(self, item_id: object, error_message: str | BaseException) -> None:
        """Record a failure; the item is tried again when the run is resumed."""
        self._flusher.check()
        if self._native.note_failed(as_key(item_id), error_message):
            self.save_progress()

    def set_total_items(self, total: int) -> None:
        self._native.set_total_items(total)

    def increment_batch(self) -> None:
        self.current_batch += 1

    def save_progress(self) -> None:
        """Wait until every mark made so far is durable."""
        self._flusher.check()
        self.checkpoint_manager.call(self._native.save_progress)

    def failed_keys(self) -> list[Key]:
        """The keys that failed and have not succeeded since, oldest failure first."""
        return [f.key for f in self._native.failures()]

    @property
    def failed_items(self) -> list[dict[str, Any]]:
        """The still-failing keys as the older tool listed them: item_id, error, timestamp."""
        return [{"item_id": f.key, "error": f.error, "timestamp": _when(f.at)}
                for f in self._native.failures()]  # fmt: skip

    @property
    def total_items(self) -> int:
        return self._native.stats().total or 0

    @property
    def processed_ids(self) -> frozenset[Key]:
        """A snapshot of the keys marked processed."""
        return self._native.processed_keys()

    def get_progress_stats(self) -> dict[str, Any]:
        """processed_count, total_items, current_batch, failure_count (keys still
        failing), completion_percentage."""
        stats = self._native.stats()
        total = stats.total or 0
        return {
            "processed_count": stats.processed, "total_items": total,
            "current_batch": self.current_batch, "failure_count": stats.failures,
            "completion_percentage": 100.0 * stats.processed / total if total else 0,
        }  # fmt: skip
