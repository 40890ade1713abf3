"""Keyed runs: :class:`CheckpointManager` starts, resumes, lists and completes them.

A keyed run lives beside file runs under a checkpoint directory (its record is
``keyed.json``, so ``asyncproc list`` and file runs ignore it). Choosing or creating a
run holds the checkpoint directory's lock, and the run's own lock is then held until the
run is completed, failed or closed, exactly as the file engine does.

The checkpoint directory is untrusted ground, as for file runs: it and the run's
directory (with every folder below it) must be this user's and writable by nobody else
(:mod:`..runs.trust`), a run id is confined to the directory and a run directory that is
a symlink is refused (:func:`..runs.rundir.run_path`), records are read and written
without following a symlink, owner-only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import orjson

from .._errors import ConfigError, IncompatibleRunError, RunError, RunNotFoundError
from .._options import DEFAULT_CHECKPOINT
from .._public import public
from ..runs.rundir import RunDir
from ..runs.store import run_store
from ..runs.views import derive_status
from ..storage.location import Location
from ..storage.protocol import Storage
from ..storage.records import RunStatus
from .loader import LoaderCheckpoint
from .records import KEYED_MANIFEST, KeyedRunRecord, check_name, config_differences
from .view import loader_names, read_record

DEFAULT_SHARDS = 8


@public
@dataclass(frozen=True, slots=True)
class KeyedRunInfo:
    """A keyed run as :meth:`CheckpointManager.list_runs` shows it."""

    run_id: str
    status: RunStatus
    started_at: float
    updated_at: float
    config: dict[str, Any]
    shards: int
    error: str | None
    loaders: tuple[str, ...]
    description: str | None = None


def normalise(config: dict[str, Any] | None) -> dict[str, Any]:
    """The config as it is stored: through JSON, so a resume compares like with like."""
    try:
        plain = orjson.loads(orjson.dumps(config or {}))
    except TypeError as exc:
        raise ConfigError(f"the run config must be JSON-serialisable: {exc}") from None
    if not isinstance(plain, dict):
        raise ConfigError("the run config must be a dict")
    return plain


def _write(run: RunDir, record: KeyedRunRecord) -> None:
    run.storage.put(KEYED_MANIFEST, record.to_bytes(), point="manifest")


@public
class KeyedRun:
    """One run being worked on by this process; holds the run's lock until it ends.

    ``async with`` it: a clean exit completes the run, an exception marks it failed
    (with the error), a cancellation leaves it interrupted; loaders are saved first.
    """

    def __init__(self, run: RunDir, record: KeyedRunRecord, lock: ExitStack, resumed: bool):
        self.run_dir, self.resumed = run, resumed
        self._record = record
        self._lock: ExitStack | None = lock
        self._loaders: dict[str, LoaderCheckpoint] = {}

    @property
    def run_id(self) -> str:
        return self._record.run_id

    @property
    def path(self) -> Path:
        """Where the run lives (a folder, or its place at a URL), for messages."""
        return self.run_dir.path

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._record.config)

    @property
    def status(self) -> RunStatus:
        return self._record.status

    @property
    def description(self) -> str | None:
        return self._record.description

    @property
    def created_at(self) -> float:
        return self._record.created_at

    async def loader(self, name: str, *, interval: int = 25) -> LoaderCheckpoint:
        """The checkpoint of loader ``name``, with the keys it acknowledged before."""
        if self._lock is None:
            raise RunError(f"run {self.run_id} has ended; start or resume a run to go on")
        if name not in self._loaders:
            loader = LoaderCheckpoint(
                self.run_dir, check_name(name), self._record.shards, interval,
                run_id=self.run_id,
            )  # fmt: skip
            await anyio.to_thread.run_sync(loader.load)
            self._loaders[name] = loader
        return self._loaders[name]

    async def save_progress(self) -> None:
        for loader in self._loaders.values():
            await loader.save_progress()

    async def complete(self) -> None:
        """Save every loader and mark the run completed."""
        await self._end(RunStatus.COMPLETED, None)

    async def fail(self, error: BaseException | str) -> None:
        """Save every loader and mark the run failed with ``error`` (resumable)."""
        await self._end(RunStatus.FAILED, f"{type(error).__name__}: {error}")

    async def close(self) -> None:
        """Save every loader and release the run, leaving it interrupted (resumable)."""
        await self._end(RunStatus.INTERRUPTED, None)

    async def _end(self, status: RunStatus, error: str | None) -> None:
        if self._lock is None:
            return
        with anyio.CancelScope(shield=True):
            for loader in self._loaders.values():
                await loader.close()
            self._record = replace(self._record, status=status, error=error, updated_at=time.time())
            await anyio.to_thread.run_sync(_write, self.run_dir, self._record)
            self._lock.close()
            self._lock = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            await self.complete()
        elif isinstance(exc, Exception):
            await self.fail(exc)
        else:
            await self.close()


@public
class CheckpointManager:
    """Keyed runs under ``checkpoint_dir``: start, resume, list, complete.

    ``checkpoint_dir`` is a local folder, an fsspec URL (``s3://bucket/ck``, with
    ``storage_options`` for its file system) or any :class:`~asyncproc.storage.protocol.
    Storage` (memory, say); runs are locked by a lock file on disk and by leases elsewhere.
    """

    def __init__(
        self,
        checkpoint_dir: str | os.PathLike[str] | Storage = DEFAULT_CHECKPOINT,
        *,
        shards: int = DEFAULT_SHARDS,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        if shards < 1:
            raise ConfigError(f"shards must be at least 1, got {shards}")
        if isinstance(checkpoint_dir, (str, os.PathLike)):
            self.store = run_store(Location(checkpoint_dir, storage_options))
        else:
            self.store = run_store(checkpoint_dir)
        self.checkpoint_dir = self.store.where
        self.shards = shards

    def list_runs(self) -> list[KeyedRunInfo]:
        """Every keyed run, newest first, its status derived as ``asyncproc list`` does."""
        found = (self._info(self.store.run(i)) for i in self.store.run_ids())
        return [info for info in found if info is not None]

    def _info(self, run: RunDir) -> KeyedRunInfo | None:
        """The run as listed; None if it is no keyed run (a file run, or one being made)."""
        try:
            record = read_record(run)
        except RunNotFoundError:
            return None
        return KeyedRunInfo(
            record.run_id, derive_status(record.status, run.holder() is not None),
            record.created_at, record.updated_at, record.config, record.shards, record.error,
            tuple(loader_names(run)), record.description,
        )  # fmt: skip

    def latest_incomplete(self) -> KeyedRunInfo | None:
        """The newest run that is not completed, or None."""
        return next((r for r in self.list_runs() if r.status is not RunStatus.COMPLETED), None)

    async def start_run(
        self,
        config: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
        new_run: bool = False,
        description: str | None = None,
        completed: bool = False,
    ) -> KeyedRun:
        """Resume ``run_id``, else the newest incomplete run, else start a new one.

        ``new_run=True`` always starts a new run. Resuming with another ``config`` is
        refused with every difference listed. ``description`` says what a new run is for
        (``asyncproc list`` shows it); a resumed run keeps its own. A completed run is
        refused unless ``completed=True`` (the older tool's manager kept using it).
        """
        wanted = normalise(config)
        stack = ExitStack()
        choose = partial(self._choose, wanted, run_id, new_run, stack, description, completed)
        try:
            run = await anyio.to_thread.run_sync(choose)
        except BaseException:
            stack.close()
            raise
        self.store.noted(run.run_id)  # so `asyncproc list` finds it anywhere
        return run

    def _choose(
        self, config: dict[str, Any], run_id: str | None, new_run: bool, stack: ExitStack,
        description: str | None, completed: bool,
    ) -> KeyedRun:  # fmt: skip
        self.store.prepare()
        with self.store.directory_lock():
            run = self._existing(run_id, new_run)
            if run is None:
                return self._create(config, stack, description)
            stack.enter_context(run.locked())
            record = self._verified(run, config, completed)
            record = replace(record, status=RunStatus.RUNNING, error=None, updated_at=time.time())
            _write(run, record)
            return KeyedRun(run, record, stack, resumed=True)

    def _existing(self, run_id: str | None, new_run: bool) -> RunDir | None:
        if run_id is not None:
            run = self.store.run(run_id)
            try:
                read_record(run)
            except RunNotFoundError:
                raise RunNotFoundError(
                    f"no keyed run {run_id!r} under {self.checkpoint_dir}; "
                    "see CheckpointManager.list_runs() for the run ids"
                ) from None
            return run
        if new_run:
            return None
        latest = self.latest_incomplete()
        return None if latest is None else self.store.run(latest.run_id)

    def _verified(self, run: RunDir, config: dict[str, Any], completed: bool) -> KeyedRunRecord:
        record = read_record(run)
        if record.status is RunStatus.COMPLETED and not completed:
            raise RunError(f"run {record.run_id} is already completed; start a new run instead")
        differences = config_differences(record.config, config)
        if differences:
            raise IncompatibleRunError(
                f"run {record.run_id} was started with another config "
                f"({'; '.join(differences)}); use the same config, or start a new run "
                "(new_run=True)"
            )
        return record

    def _create(
        self, config: dict[str, Any], stack: ExitStack, description: str | None
    ) -> KeyedRun:
        run = self.store.new_run()
        stack.enter_context(run.locked())
        now = time.time()
        record = KeyedRunRecord(
            run.run_id, RunStatus.RUNNING, now, now, config, self.shards, description=description
        )
        _write(run, record)
        return KeyedRun(run, record, stack, resumed=False)
