"""The manual keyed checkpoint: one :class:`LoaderCheckpoint` per named loader of a run.

Keys are spread over the run's shards by a stable hash; each shard commits on its own
(:mod:`._keyed_store`), all dirty shards of a save in parallel worker threads.

*Acknowledged* means saved: a key is acknowledged once a :meth:`save_progress` that
started after its :meth:`mark_processed` has returned. Every ``interval``-th mark awaits
such a save itself, so at most ``interval - 1`` marks (plus marks made while a save was
running) are ever unacknowledged. A SIGKILL loses no acknowledged key; a corrupt newest
checkpoint of a shard costs at most that shard's keys of one save.

Marking is thread-safe (:meth:`note_processed`, :meth:`note_failed` take a lock, and so
does taking a save's snapshot), so the older tool's sync shape (:mod:`.compat`) marks
from worker threads while saves run on the event loop.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from .._errors import CheckpointError, ConfigError, RunError
from .._public import public
from ..runs.rundir import RunDir
from .records import (
    LOADER_RECORD,
    Key,
    KeyFailure,
    LoaderRecord,
    LoaderStatus,
    check_key,
    shard_of,
)
from .store import KeyShard, Pending
from .view import loader_storage

log = logging.getLogger("asyncproc")

RECENT_FAILURES = 10


@public
@dataclass(frozen=True, slots=True)
class LoaderStats:
    """A loader's progress; ``percent`` is None until the total is known."""

    name: str
    processed: int
    total: int | None
    percent: float | None
    failures: int
    recent_failures: tuple[KeyFailure, ...]


def _error_parts(error: BaseException | str) -> tuple[str, str]:
    if isinstance(error, BaseException):
        return type(error).__name__, str(error)
    return "Error", str(error)


def _refused_link(root: Path, exc: OSError) -> BaseException:
    """A symlink met below ``root`` as one line saying what to do; other errors as they are."""
    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
        return exc
    return CheckpointError(
        f"{root / str(exc.filename)} {exc.strerror}; remove it if you did not put it there"
    )


@public
class LoaderCheckpoint:
    """Which keys of one loader are done or failed; saved atomically, shard by shard.

    Made by :meth:`KeyedRun.loader`; not safe to share between processes (the run's lock
    prevents that), safe to use from many tasks of one event loop; the ``note_*`` methods
    and the reads are safe from other threads too.
    """

    def __init__(
        self, run_dir: RunDir, name: str, shards: int, interval: int, *, run_id: str
    ) -> None:
        if interval < 1:
            raise ConfigError(f"the checkpoint interval must be at least 1, got {interval}")
        self.name, self.interval = name, interval
        self._run_root = run_dir.path
        self._storage = loader_storage(run_dir, name)
        self._shards = [KeyShard(self._storage, k, run_id) for k in range(shards)]
        self._done: set[Key] = set()
        self._failed: dict[Key, KeyFailure] = {}
        self._recent: deque[KeyFailure] = deque(maxlen=RECENT_FAILURES)
        self._total: int | None = None
        self._since_save = 0
        self._save_lock = anyio.Lock()
        self._mutex = threading.Lock()  # marks (any thread) against a save's snapshot
        self._closed = False
        self.problems: tuple[str, ...] = ()
        self.status: LoaderStatus = LoaderStatus.IN_PROGRESS
        self.error: str | None = None
        self._saved_record: LoaderRecord | None = None
        self.on_mark: Callable[[], None] | None = None  # told after every mark, any thread

    # -- loading ----------------------------------------------------------------------

    def load(self) -> None:
        """Read every shard's acknowledged keys (blocking; called from a thread).

        Every name is walked from the run's own root, never through a symlink (on local
        disk): a loader's folder planted to lead elsewhere is refused in one line.
        """
        try:
            self._load()
        except OSError as exc:
            raise _refused_link(self._run_root, exc) from exc

    def _load(self) -> None:
        problems: list[str] = []
        for shard in self._shards:
            loaded = shard.load()
            self._done |= loaded.keys
            self._failed.update(loaded.failures)
            problems += (f"shard {shard.shard_id}: {p}" for p in loaded.problems)
        for key in self._done.intersection(self._failed):
            del self._failed[key]
        self._recent.extend(sorted(self._failed.values(), key=lambda f: f.at))
        record = self._saved_record = self._read_record()
        if record is not None:
            self._total, self.status, self.error = record.total_items, record.status, record.error
        self.problems = tuple(problems)
        for problem in problems:
            log.warning("loader %s: %s", self.name, problem)

    def _read_record(self) -> LoaderRecord | None:
        raw = self._storage.get(LOADER_RECORD)
        return None if raw is None else LoaderRecord.from_bytes(raw, f"loader {self.name} record")

    # -- the older system's methods ---------------------------------------------------

    def is_processed(self, key: Key) -> bool:
        """True when ``key`` was marked processed in this run (now or before a resume)."""
        return key in self._done

    async def mark_processed(self, key: Key) -> None:
        """Record ``key`` as done; every ``interval``-th mark saves (and awaits the save)."""
        if self.note_processed(key):
            await self.save_progress()

    async def mark_failed(self, key: Key, error: BaseException | str) -> None:
        """Record that ``key`` failed with ``error``; it is tried again on a resume."""
        if self.note_failed(key, error):
            await self.save_progress()

    def note_processed(self, key: Key) -> bool:
        """:meth:`mark_processed` without the save, from any thread: True when one is due."""
        self._check_open()
        key = check_key(key)
        with self._mutex:
            if key in self._done:
                return False
            self._done.add(key)
            was_failing = self._failed.pop(key, None) is not None
            self._shards[shard_of(key, len(self._shards))].add_key(key, was_failing)
            due = self._count_mark()
        self._told()
        return due

    def note_failed(self, key: Key, error: BaseException | str) -> bool:
        """:meth:`mark_failed` without the save, from any thread: True when one is due."""
        self._check_open()
        key = check_key(key)
        error_type, message = _error_parts(error)
        failure = KeyFailure(key, error_type, message, time.time())
        with self._mutex:
            new = key not in self._failed
            self._failed[key] = failure
            self._recent.append(failure)
            self._shards[shard_of(key, len(self._shards))].add_failure(failure, new)
            due = self._count_mark()
        self._told()
        return due

    def _count_mark(self) -> bool:
        self._since_save += 1
        return self._since_save >= self.interval

    def _told(self) -> None:
        if self.on_mark is not None:
            self.on_mark()

    def processed_keys(self) -> frozenset[Key]:
        """A snapshot of every key marked processed."""
        with self._mutex:
            return frozenset(self._done)

    def failures(self) -> list[KeyFailure]:
        """Every key that failed and has not succeeded since, oldest failure first."""
        with self._mutex:
            return sorted(self._failed.values(), key=lambda f: f.at)

    def set_total_items(self, total: int) -> None:
        """Tell the loader how many items to expect (saved with the next save)."""
        if total < 0:
            raise ConfigError(f"the total number of items cannot be negative, got {total}")
        self._total = total

    async def save_progress(self) -> None:
        """Make every mark so far durable: dirty shards commit in parallel threads."""
        async with self._save_lock:
            with self._mutex:
                pending = [(s, s.snapshot()) for s in self._shards if s.dirty]
                self._since_save = 0
            record = self._record()
            async with anyio.create_task_group() as tg:
                for shard, snapshot in pending:
                    tg.start_soon(self._commit_shard, shard, snapshot)
                if record != self._saved_record:
                    tg.start_soon(self._save_record, record)

    async def set_status(self, status: LoaderStatus, error: str | None = None) -> None:
        """Save every mark, then record the loader as in progress, completed or failed."""
        self.status, self.error = status, error
        await self.save_progress()

    def stats(self) -> LoaderStats:
        """Processed, total, percent, failures and the most recent failures."""
        with self._mutex:
            done, total, failures = len(self._done), self._total, len(self._failed)
            recent = tuple(reversed(self._recent))
        percent = round(100.0 * done / total, 1) if total else None
        return LoaderStats(self.name, done, total, percent, failures, recent)

    # -- internals --------------------------------------------------------------------

    def _record(self) -> LoaderRecord:
        saved = self._saved_record
        same = saved is not None and (saved.total_items, saved.status, saved.error) == (
            self._total,
            self.status,
            self.error,
        )
        if same:
            assert saved is not None
            return saved
        return LoaderRecord(self.name, self._total, self.status, self.error, time.time())

    async def _commit_shard(self, shard: KeyShard, pending: Pending) -> None:
        await anyio.to_thread.run_sync(shard.commit, pending)

    async def _save_record(self, record: LoaderRecord) -> None:
        raw = record.to_bytes()
        await anyio.to_thread.run_sync(self._storage.put, LOADER_RECORD, raw)
        self._saved_record = record

    def _check_open(self) -> None:
        if self._closed:
            raise RunError(
                f"loader {self.name} belongs to a run that has ended; start or resume "
                "a run with CheckpointManager.start_run() and take its loader again"
            )

    async def close(self) -> None:
        """Save what is left and release the shard files; later marks are refused."""
        if self._closed:
            return
        with anyio.CancelScope(shield=True):
            await self.save_progress()
            self._closed = True
            for shard in self._shards:
                shard.close()
