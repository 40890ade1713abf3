"""``@checkpointed``: the older ``checkpoint_loader`` decorator, async and sharded.

The decorated function receives a :class:`LoaderContext` first; its
:meth:`~LoaderContext.process_items` skips keys already done, runs the rest on
``concurrency`` of the engine's lanes (:class:`.work.KeyedWork`: an endless async iterator
is read only as fast as items are taken), records failures with their errors and
checkpoints every ``interval`` items.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from .._errors import ConfigError
from .._options import DEFAULT_CHECKPOINT
from .._public import public
from ..engine.pipeline import OBJECTS, Pipeline
from ..processors.loading import load_processor
from ..storage.protocol import Storage
from .loader import LoaderCheckpoint, LoaderStats
from .records import Key, check_key
from .run import DEFAULT_SHARDS, CheckpointManager
from .work import KeyedWork

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")


@public
@dataclass(frozen=True, slots=True)
class ItemsReport:
    """What one :meth:`LoaderContext.process_items` call did."""

    succeeded: int  # items processed now
    failed: int  # items whose every attempt failed now (recorded with their errors)
    skipped: int  # items already done (before a resume, or duplicates)


def _default_key(item: Any) -> Key:
    return check_key(item)


@public
class LoaderContext(Generic[T]):
    """What a ``@checkpointed`` function receives: its loader checkpoint and helpers."""

    def __init__(self, checkpoint: LoaderCheckpoint, key: Callable[[T], Key], run_id: str):
        self.checkpoint = checkpoint
        self.run_id = run_id
        self._key = key

    def stats(self) -> LoaderStats:
        return self.checkpoint.stats()

    async def process_items(
        self,
        items: Iterable[T] | AsyncIterable[T],
        fn: Callable[[T], Awaitable[Any]] | Callable[[T], Any],
        *,
        concurrency: int = 16,
        retries: int = 0,
        item_timeout: float | None = None,
    ) -> ItemsReport:
        """Run ``fn`` on every item whose key is not done yet, ``concurrency`` at a time.

        ``fn`` may be async or plain (plain functions run in worker threads). A failing
        item is tried ``retries`` more times with backoff (each attempt bounded by
        ``item_timeout`` seconds), then recorded as failed with its last error.
        """
        if concurrency < 1 or retries < 0:
            raise ConfigError("process_items needs concurrency >= 1 and retries >= 0")
        pipeline = Pipeline(
            load_processor(fn), format=OBJECTS, output_kind=OBJECTS, retries=retries,
            timeout=item_timeout, threads=concurrency,
        )  # fmt: skip
        work = KeyedWork(self.checkpoint, self._key, pipeline, concurrency)
        with pipeline:
            feed_error = await work.run(items)
        await self.checkpoint.save_progress()
        if feed_error is not None:
            raise feed_error
        return ItemsReport(work.succeeded, work.failed, work.skipped)


@public
def checkpointed(
    name: str | None = None,
    *,
    interval: int = 25,
    key: Callable[[Any], Key] = _default_key,
    checkpoint_dir: str | os.PathLike[str] | Storage = DEFAULT_CHECKPOINT,
    shards: int = DEFAULT_SHARDS,
    config: dict[str, Any] | None = None,
    new_run: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> Callable[
    [Callable[Concatenate[LoaderContext[Any], P], Awaitable[R]]], Callable[P, Awaitable[R]]
]:
    """Checkpoint an async loader: each call resumes the newest incomplete run.

    The function gets a :class:`LoaderContext` first. A clean return completes the run;
    an exception saves progress, marks the run failed and propagates, so calling again
    resumes and skips every acknowledged key. ``checkpoint_dir`` may be a folder, an
    fsspec URL (with ``storage_options``) or a storage, as for :class:`CheckpointManager`.
    """
    if interval < 1:
        raise ConfigError(f"interval must be at least 1, got {interval}")

    def decorate(
        fn: Callable[Concatenate[LoaderContext[Any], P], Awaitable[R]],
    ) -> Callable[P, Awaitable[R]]:
        loader_name = name or fn.__name__

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            manager = CheckpointManager(
                checkpoint_dir, shards=shards, storage_options=storage_options
            )
            async with await manager.start_run(config, new_run=new_run) as run:
                loader = await run.loader(loader_name, interval=interval)
                return await fn(LoaderContext(loader, key, run.run_id), *args, **kwargs)

        return wrapper

    return decorate
