"""The run's lanes: one pool of tasks that take items from whichever work has them.

Lanes take items from :class:`LaneWork`: lines queued by a feeder, an
:class:`~.ordering.Ordering` that hands out sequence numbers and (for the ordered kinds)
puts the results back in order for the work's own committer, and a window (``limit``) of
items lanes may run ahead of its last commit. The kinds of work: an attempt at a unit of
a file run (:class:`~.unit.UnitRun`), an attempt at a ``--retry-failed``
(:class:`~.replay.run.RetryRun`), the items of a keyed ``process_items`` call (marks
instead of ordered records, ``asyncproc.keyed.work``) and one level of
``asyncproc bench`` (``asyncproc.bench.level``). All run on this one loop.

Concurrency is global: ``size`` lanes serve all the work added, so a unit that is slow
or long gets the lanes the others no longer need, while each keeps its own bounded window
and its own in-order commit. Lane ``k`` calls work ``k mod n`` home, so the lanes spread
over the work; it takes items elsewhere only while its home has nothing to take, and
looks for its home again every ``YIELD_EVERY`` items and whenever work comes or goes.
With nothing to take anywhere it sleeps until work gets lines or window, work is added,
or the pool closes.

The hot path takes no lock and makes no thread hop: one decode, one call, one encode
and one :meth:`Ordering.finish` per item, inline.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel

from .context import LaneSlot, current_slot
from .forks import FORKED, leave
from .ordering import Ordering
from .pipeline import CALL, DECODE, ENCODE, Pipeline
from .retry import ITEM_ERRORS, cancelled
from .signal import Signal

# Lanes of a processor that never awaits yield this often, so commits keep flowing.
YIELD_EVERY = 256
# A feeder refills its queue of lines once lanes have taken it down to this many.
FEED_LOW_WATER = 1024
# Wake every waiting lane (the default of :meth:`LanePool.wake`).
EVERY_LANE = sys.maxsize

T = TypeVar("T")
# Where an item's result goes: (seq, end, record, failed) -> a commit is due.
Finish = Callable[[int, int, bytes, bool], bool]


class LaneWork(Generic[T]):
    """What lanes take items from: queued lines, where their results go, and a window.

    Sequence number ``seq`` (from :meth:`Ordering.take`) is the item with index
    ``first_index + seq``, unless the work queues each line's index (``indexes``). A
    line's ``start`` is where the item is in the input (its identity and its dead
    letter's offset); its ``end`` is what the ordering records as reached once the item
    is ordered. Results go to ``finish``: :meth:`Ordering.finish` unless the work keeps
    them another way (keyed marks). The feeder queues lines (:meth:`queue`) and is woken
    on ``space`` once lanes take the queue down to ``low_water``; the committer waits on
    ``batch``, fired when ``finish`` says a commit is due or the queue runs dry.
    """

    def __init__(
        self, unit_id: int, order: Ordering, limit: int, first_index: int,
        wake: Callable[[int], None], *, indexed: bool = False,
    ) -> None:  # fmt: skip
        self.unit_id = unit_id  # what current_item().unit says
        self.order, self.limit, self.first_index = order, limit, first_index
        self.starts: deque[int] = deque()  # where the lines waiting for a lane start
        self.lines: deque[T] = deque()  # the lines, without their line end
        self.ends: deque[int] = deque()  # what each line's item reaches when ordered
        self.indexes: deque[int] | None = deque() if indexed else None
        self.stopping = False
        self.lanes_ended = False
        self.last_error: str | None = None
        self.batch, self.space = Signal(), Signal()
        self.finish: Finish = order.finish
        self.low_water = FEED_LOW_WATER
        self._wake = wake

    @property
    def ready(self) -> bool:
        """A lane may take an item now."""
        order = self.order
        return bool(self.lines) and order.taken - order.durable < self.limit and not self.stopping

    def queue(
        self, starts: Sequence[int], lines: Sequence[T], ends: Sequence[int],
        indexes: Sequence[int] = (),
    ) -> None:  # fmt: skip
        """Queue lines (with their ``indexes``, if the work queues them); wake the lanes."""
        if self.indexes is not None:
            self.indexes.extend(indexes)
        self.starts.extend(starts)
        self.lines.extend(lines)
        self.ends.extend(ends)
        if lines:
            self._wake(len(lines))  # a lane for each line, as far as lanes wait

    def stop(self) -> None:
        """Take no new items; commit what finishes in order, then return."""
        self.stopping = True
        self.space.fire()
        self.batch.fire()

    def lanes_gone(self) -> None:
        """The lanes have ended: items still in flight will never finish."""
        self.lanes_ended = True
        self.batch.fire()


class LanePool:
    """``size`` lanes over the work added to it, until it is closed or stopped."""

    def __init__(self, size: int, pipeline: Pipeline, fingerprint: str | None) -> None:
        self.size = size
        self.units: list[LaneWork[Any]] = []
        self.slots: list[LaneSlot] = []  # each lane's current item (read by stall warnings)
        self._pipeline, self._fingerprint = pipeline, fingerprint
        self._waiting: deque[anyio.Event] = deque()  # one per lane waiting for work
        self._closed = self._stopping = False
        self._scope: anyio.CancelScope | None = None
        self._epoch = 0  # changes when a unit comes or goes: lanes look for their home again
        pipeline.changed = self._changed  # the pipeline swapped its call: lanes reload it

    def add(self, unit: LaneWork[Any]) -> None:
        self.units.append(unit)
        self._epoch += 1
        if self._stopping:
            unit.stop()
        self.wake()

    def remove(self, unit: LaneWork[Any]) -> None:
        self.units.remove(unit)
        self._epoch += 1

    def _changed(self) -> None:
        self._epoch += 1

    def wake(self, lanes: int = EVERY_LANE) -> None:
        """Something changed: work got lines or window, or the pool is ending. Wakes up
        to ``lanes`` of the lanes waiting (``lanes`` new lines need no more: a keyed
        item queued alone wakes one lane, not all of them)."""
        waiting = self._waiting
        for _ in range(min(lanes, len(waiting))):
            waiting.popleft().set()

    async def _wait(self) -> None:
        event = anyio.Event()
        self._waiting.append(event)
        try:
            await event.wait()
        finally:
            if not event.is_set():  # cancelled: a wake must not go to a lane that is gone
                self._waiting.remove(event)

    def close(self) -> None:
        """No more units will come: lanes end once nothing is left to take."""
        self._closed = True
        self.wake()

    def stop(self, grace: float) -> None:
        """Take no new items; items in flight get ``grace`` seconds, then are cancelled."""
        self._stopping = True
        for unit in self.units:
            unit.stop()
        self.wake()
        if self._scope is not None:
            self._scope.deadline = min(self._scope.deadline, anyio.current_time() + grace)

    async def run(self) -> None:
        """Run the lanes; when they end, tell every unit still running."""
        try:
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                for k in range(self.size):
                    tg.start_soon(self._lane, k)
        finally:
            for unit in self.units:
                unit.lanes_gone()

    async def _lane(self, home: int) -> None:
        slot = LaneSlot(-1, self._fingerprint or "")
        if self._fingerprint is not None:  # None: items have no place in an input to tell
            current_slot.set(slot)
        self.slots.append(slot)
        while not self._stopping:
            unit = self._pick(home)
            if unit is not None:
                units = self.units
                await self._drain(unit, slot, units[home % len(units)])
            elif self._closed:
                return
            else:
                await self._wait()

    def _pick(self, home: int) -> LaneWork[Any] | None:
        """The lane's home unit if it has an item to take, else the next one that has."""
        units = self.units
        for k in range(len(units)):
            unit = units[(home + k) % len(units)]
            if unit.ready:
                return unit
        return None

    async def _drain(self, unit: LaneWork[Any], slot: LaneSlot, home: LaneWork[Any]) -> None:
        """Process ``unit``'s items while it has lines and window, ``YIELD_EVERY`` at most.

        A lane away from ``home`` goes back as soon as its home has an item to take.
        """
        away = None if unit is home else home
        starts, lines, ends, indexes = unit.starts, unit.lines, unit.ends, unit.indexes
        order, limit, finish, low = unit.order, unit.limit, unit.finish, unit.low_water
        pipeline, first = self._pipeline, unit.first_index
        decode, call, encode, forked = pipeline.decode, pipeline.call, pipeline.encode, FORKED
        slot.unit, budget, epoch = unit.unit_id, YIELD_EVERY, self._epoch
        while (
            lines
            and order.taken - order.durable < limit
            and not unit.stopping
            and self._epoch == epoch
            and (away is None or not away.ready)
        ):
            start, raw, end = starts.popleft(), lines.popleft(), ends.popleft()
            if len(lines) == low:
                unit.space.fire()
            seq = order.take()
            slot.index = index = first + seq if indexes is None else indexes.popleft()
            slot.offset = start
            # The hot path is inline: one decode, one call, one encode, no extra frames.
            stage, item = DECODE, raw
            try:
                item = decode(raw)
                stage = CALL
                value = await call(item)
                if forked[0]:  # a child the processor forked came back: it must not go on
                    leave()
                stage = ENCODE
                record, failed = encode(index, value), False
            except ITEM_ERRORS as exc:
                if cancelled(exc):
                    raise
                record, failed = await pipeline.recover(stage, index, start, item, exc)
                if failed:
                    unit.last_error = pipeline.error
            if finish(seq, end, record, failed) or not lines or unit.stopping:
                unit.batch.fire()
            budget -= 1
            if not budget:
                await anyio.lowlevel.checkpoint()  # commits and the feeder get their turn
                return
