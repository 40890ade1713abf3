"""``@checkpointed``: the older ``checkpoint_loader`` decorator, async and sharded.

The decorated function receives a :class:`LoaderContext` first; its
:meth:`~LoaderContext.process_items` skips keys already done, runs the rest through a
fixed pool of ``concurrency`` tasks fed by a zero-buffer stream (so an endless async
iterator is read only as fast as items are taken), records failures with their errors
and checkpoints every ``interval`` items.
"""

from __future__ import annotations

import functools
import os
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._errors import ConfigError
from .._options import DEFAULT_CHECKPOINT
from .._public import public
from ..engine.pipeline import Pipeline
from ..processors.loading import load_processor
from ..storage.protocol import Storage
from .loader import LoaderCheckpoint, LoaderStats
from .records import Key, check_key
from .run import DEFAULT_SHARDS, CheckpointManager

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


class _Tally:
    __slots__ = ("failed", "failed_now", "in_flight", "skipped", "succeeded")

    def __init__(self) -> None:
        self.succeeded = self.failed = self.skipped = 0
        self.in_flight: set[Key] = set()
        self.failed_now: set[Key] = set()


async def _each(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


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
            load_processor(fn), format="jsonl", output_kind="jsonl", retries=retries,
            timeout=item_timeout, threads=concurrency,
        )  # fmt: skip
        tally = _Tally()
        send, receive = anyio.create_memory_object_stream[tuple[Key, T]](0)
        feed_error: Exception | None = None
        with pipeline:
            async with anyio.create_task_group() as tg:
                for _ in range(concurrency):
                    tg.start_soon(self._consume, receive.clone(), pipeline, tally)
                receive.close()
                try:
                    await self._feed(items, send, tally)
                except Exception as exc:  # the iterator or the key function: in-flight items finish
                    feed_error = exc
        await self.checkpoint.save_progress()
        if feed_error is not None:
            raise feed_error
        return ItemsReport(tally.succeeded, tally.failed, tally.skipped)

    async def _feed(
        self,
        items: Iterable[T] | AsyncIterable[T],
        send: MemoryObjectSendStream[tuple[Key, T]],
        tally: _Tally,
    ) -> None:
        async with send:
            async for item in _each(items):
                key = check_key(self._key(item))
                if self._skip(key, tally):
                    continue
                tally.in_flight.add(key)
                await send.send((key, item))

    def _skip(self, key: Key, tally: _Tally) -> bool:
        seen = key in tally.in_flight or key in tally.failed_now
        if seen or self.checkpoint.is_processed(key):
            tally.skipped += 1
            return True
        return False

    async def _consume(
        self,
        receive: MemoryObjectReceiveStream[tuple[Key, T]],
        pipeline: Pipeline,
        tally: _Tally,
    ) -> None:
        async with receive:
            async for key, item in receive:
                _, error, _ = await pipeline.attempt(item)
                if error is None:
                    await self.checkpoint.mark_processed(key)
                    tally.succeeded += 1
                else:
                    await self.checkpoint.mark_failed(key, error)
                    tally.failed += 1
                    tally.failed_now.add(key)
                tally.in_flight.discard(key)


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
