"""The items of one ``process_items`` call, as work for the engine's lanes.

Keyed items run on the same lane loop as a file run's units (:class:`~..engine.lanes.LanePool`),
as a kind of :class:`~..engine.lanes.LaneWork`: the feeder reads the caller's items one at
a time and queues one only once the lanes have taken the last (so an endless async
iterator is read only as fast as items are taken), skipping keys done already or queued
in this call; each result is a mark on the loader (:meth:`KeyedWork.finish`), and a saver
saves the marks whenever the loader says a save is due. Nothing is ordered: a mark is
durable with the first save after it, whatever came before it.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Any

import anyio

from ..engine.lanes import LanePool, LaneWork
from ..engine.ordering import Ordering
from ..engine.pipeline import Pipeline
from ..engine.signal import Signal
from .loader import LoaderCheckpoint
from .records import Key, check_key


class KeyedWork(LaneWork[Any]):
    """Every item of one call whose key is not done, run by ``lanes`` lanes."""

    def __init__(
        self, loader: LoaderCheckpoint, key: Callable[[Any], Key], pipeline: Pipeline,
        lanes: int,
    ) -> None:  # fmt: skip
        self._pool = LanePool(lanes, pipeline, None)
        super().__init__(-1, Ordering(1, 0), sys.maxsize, 0, self._pool.wake)
        self.finish, self.low_water = self._finish, 0
        self.succeeded = self.failed = self.skipped = 0
        self._loader, self._key, self._pipeline = loader, key, pipeline
        self._keys: dict[int, Key] = {}  # the key of each item queued or in flight, by seq
        self._in_flight: set[Key] = set()  # and those keys
        self._queued = self._finished = 0
        self._failed_now: set[Key] = set()
        self._due = self._eof = False
        self._saves = Signal()  # a save is due, or every item is marked (not `batch`: the
        # lanes fire that whenever the queue runs dry, which for keyed items is every item)

    async def run(self, items: Iterable[Any] | AsyncIterable[Any]) -> Exception | None:
        """Process every item; the error that ended the items early, if one did.

        Items already taken finish (and are marked) even when the items or the key
        function raise; the caller raises the error once they have.
        """
        self._pool.add(self)
        error: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._pool.run)
            tg.start_soon(self._save_when_due)
            try:
                await self._feed(items)
            except Exception as exc:  # the iterator or the key function
                error = exc
            self._eof = True
            self._saves.fire()
        return error

    async def _feed(self, items: Iterable[Any] | AsyncIterable[Any]) -> None:
        async for item in _each(items):
            key = check_key(self._key(item))
            if self._skip(key):
                continue
            self._keys[self._queued] = key
            self._in_flight.add(key)
            self.queue((self._queued,), (item,), (self._queued,))
            self._queued += 1
            while self.lines:
                await self.space.wait()

    def _skip(self, key: Key) -> bool:
        seen = key in self._in_flight or key in self._failed_now
        if seen or self._loader.is_processed(key):
            self.skipped += 1
            return True
        return False

    def _finish(self, seq: int, end: int, record: bytes, failed: bool) -> bool:
        """Mark the item's key processed, or failed with its last error."""
        del end, record
        key = self._keys.pop(seq)
        self._in_flight.discard(key)
        self._finished += 1
        if failed:
            self.failed += 1
            self._failed_now.add(key)
            due = self._loader.note_failed(key, self._pipeline.failure or "failed")
        else:
            self.succeeded += 1
            due = self._loader.note_processed(key)
        if due or self._over():
            self._due = self._due or due
            self._saves.fire()
        return False

    def _over(self) -> bool:
        return self._eof and not self.lines and self._finished == self._queued

    async def _save_when_due(self) -> None:
        """Save the marks whenever a save is due, until every item is marked; then the
        lanes end."""
        while True:
            if self._due:
                self._due = False
                await self._loader.save_progress()
            elif self._over():
                self._pool.close()
                return
            else:
                await self._saves.wait()


async def _each(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
