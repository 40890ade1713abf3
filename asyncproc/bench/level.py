"""One level of ``asyncproc bench``: the sample's items on the engine's lane loop, timed.

A level is a kind of :class:`~..engine.lanes.LaneWork`: its items (the sample, cycled)
run on ``concurrency`` lanes of a :class:`~..engine.lanes.LanePool`, the loop every run
uses, through the pipeline's call with no retries, no ordering and no checkpoint. Each
call is timed with :func:`time.perf_counter` around the call itself (a ``timed``
pipeline's ``timings``); a failed call is a data point (an error), not a crash, and so
is a call the service rejected (``RetryAfter``): no pause, no retry. A level ends after
its number of items, or once its seconds are up: then lanes take no new item and the
calls in flight finish.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import anyio

from ..engine.lanes import FEED_LOW_WATER, LanePool, LaneWork
from ..engine.ordering import Ordering
from ..engine.pipeline import Pipeline


class BenchLevel(LaneWork[Any]):
    """``concurrency`` lanes over ``items`` (cycled), for ``limit`` items or ``seconds``."""

    def __init__(
        self, pipeline: Pipeline, items: Sequence[Any], concurrency: int, limit: int | None,
        seconds: float | None,
    ) -> None:  # fmt: skip
        self._pool = LanePool(concurrency, pipeline, None)
        super().__init__(-1, Ordering(1, 0), sys.maxsize, 0, self._pool.wake)
        self.finish = self._finish
        self.latencies: list[float] = []
        self.errors = 0
        self._pipeline, self._items = pipeline, items
        self._limit, self._seconds = limit, seconds
        self._queued = self._finished = 0
        self._eof = False

    async def measure(self) -> float:
        """Run the level; the seconds it took, from its first item to its last result."""
        self._pipeline.timings = self.latencies
        self._pool.add(self)
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._pool.run)
            tg.start_soon(self._feed)
            await self._until_over()
            self._pool.close()
        return time.perf_counter() - started

    async def _feed(self) -> None:
        """Queue the items a block at a time, cycling through the sample."""
        items, count = self._items, len(self._items)
        while not self.stopping and (block := self._next_block()):
            first = self._queued
            self._queued += block
            positions = range(first, first + block)
            self.queue(positions, [items[k % count] for k in positions], positions)
            while len(self.lines) > self.low_water and not self.stopping:
                await self.space.wait()
        self._eof = True
        self.batch.fire()

    def _next_block(self) -> int:
        left = FEED_LOW_WATER if self._limit is None else self._limit - self._queued
        return min(left, FEED_LOW_WATER)

    async def _until_over(self) -> None:
        """Wait for every item taken to finish; at the deadline, take no more."""
        deadline = math.inf if self._seconds is None else anyio.current_time() + self._seconds
        while not self._over():
            with anyio.move_on_at(deadline):
                await self.batch.wait()
            if anyio.current_time() >= deadline and not self.stopping:
                self.stop()

    def _over(self) -> bool:
        done = self._eof and not self.lines
        return (done or self.stopping) and self._finished == self.order.taken

    def _finish(self, seq: int, end: int, record: bytes, failed: bool) -> bool:
        del seq, end, record
        self._finished += 1
        self.errors += failed
        return self._finished == self.order.taken and (self.stopping or self._eof)
