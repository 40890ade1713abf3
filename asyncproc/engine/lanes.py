"""The run's lanes: one pool of tasks that take items from whichever unit has them.

Concurrency is global: ``size`` lanes serve every running unit, so a unit that is
slow or long gets the lanes the others no longer need, while each unit keeps its own
bounded window (``UnitRun.limit``) and its own in-order commit. Lane ``k`` calls unit
``k mod n`` home, so the lanes spread over the units; it works on another unit only
while its home has nothing to take, and looks for its home again every
``YIELD_EVERY`` items and whenever a unit comes or goes. With nothing to take anywhere
it sleeps until a unit gets lines or window, a unit is added, or the pool closes.

The hot path takes no lock and makes no thread hop: one decode, one call, one encode
and one :meth:`Ordering.finish` per item, inline.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel

from .context import LaneSlot, current_slot
from .forks import FORKED, leave
from .pipeline import CALL, DECODE, ENCODE, Pipeline
from .retry import ITEM_ERRORS, cancelled
from .signal import Signal
from .unit import FEED_LOW_WATER, UnitRun

# Lanes of a processor that never awaits yield this often, so commits keep flowing.
YIELD_EVERY = 256


class LanePool:
    """``size`` lanes over the units added to it, until it is closed or stopped."""

    def __init__(self, size: int, pipeline: Pipeline, fingerprint: str) -> None:
        self.size = size
        self.units: list[UnitRun] = []
        self.slots: list[LaneSlot] = []  # each lane's current item (read by stall warnings)
        self._pipeline, self._fingerprint = pipeline, fingerprint
        self._ready = Signal()
        self._closed = self._stopping = False
        self._scope: anyio.CancelScope | None = None
        self._epoch = 0  # changes when a unit comes or goes: lanes look for their home again
        pipeline.changed = self._changed  # the pipeline swapped its call: lanes reload it

    def add(self, unit: UnitRun) -> None:
        self.units.append(unit)
        self._epoch += 1
        if self._stopping:
            unit.stop()
        self.wake()

    def remove(self, unit: UnitRun) -> None:
        self.units.remove(unit)
        self._epoch += 1

    def _changed(self) -> None:
        self._epoch += 1

    def wake(self) -> None:
        """Something changed: a unit got lines or window, or the pool is ending."""
        self._ready.fire()

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
        slot = LaneSlot(-1, self._fingerprint)
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
                await self._ready.wait()

    def _pick(self, home: int) -> UnitRun | None:
        """The lane's home unit if it has an item to take, else the next one that has."""
        units = self.units
        for k in range(len(units)):
            unit = units[(home + k) % len(units)]
            if unit.ready:
                return unit
        return None

    async def _drain(self, unit: UnitRun, slot: LaneSlot, home: UnitRun) -> None:
        """Process ``unit``'s items while it has lines and window, ``YIELD_EVERY`` at most.

        A lane away from ``home`` goes back as soon as its home has an item to take.
        """
        away = None if unit is home else home
        starts, lines, ends = unit.starts, unit.lines, unit.ends
        order, limit = unit.order, unit.limit
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
            if len(lines) == FEED_LOW_WATER:
                unit.space.fire()
            seq = order.taken
            order.taken = seq + 1
            slot.index = index = first + seq
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
            if order.finish(seq, end, record, failed) or not lines or unit.stopping:
                unit.batch.fire()
            budget -= 1
            if not budget:
                await anyio.lowlevel.checkpoint()  # commits and the feeder get their turn
                return
