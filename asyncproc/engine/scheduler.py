"""Handing out units, and splitting a running one when capacity is idle.

The split protocol, step by step (each step's crash point in brackets):

1. The coordinator picks the running unit with the most unclaimed items and offers it
   indexed points near the middle of what it has not claimed.
2. The unit takes one beyond everything it has handed to lanes, drops the lines it read
   past it, and from now on never reads past it. Nothing durable has changed: a crash
   here forgets the cap (the unit's checkpoints never go past the point) [split_capped].
3. The coordinator writes the plan with a new unit starting at that point (an atomic
   manifest replace). This is the split's one durable record: from now on, the old unit
   ends at the point, because a unit ends where the next one starts [split_recorded].
4. The new unit is handed out; it starts with no checkpoint, at the point.

A resume believes the plan: a unit whose checkpoint lies past its end (an attempt that
never heard of the split) is refused and an older checkpoint used; the merge takes the
units in order of their start. So a crash at any step gives the same bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio

from ..storage.faults import crashpoint
from ..storage.records import LineIndex, UnitCheckpoint, UnitPlan
from .executor import UnitHandle
from .unit import Commit
from .units import Extent, Plan, UnitSpec, first_checkpoint, middle_places

log = logging.getLogger("asyncproc")


class Scheduler:
    """The coordinator's :class:`~.executor.WorkSource`: pending units first, then splits."""

    def __init__(
        self, plan: Plan, index: LineIndex, states: dict[int, UnitCheckpoint],
        spec_for: Callable[[UnitPlan, Extent], UnitSpec],
        record: Callable[[Plan], Awaitable[None]],
        stopping: Callable[[], bool],
        on_commit: Callable[[Commit], None],
        splits: bool = True,
    ) -> None:  # fmt: skip
        self.plan, self.states = plan, states
        self._index, self._spec_for, self._record = index, spec_for, record
        self._stopping, self._on_commit = stopping, on_commit
        self._pending = [u.unit_id for u in plan if not plan.is_done(states[u.unit_id])]
        self._running: dict[int, UnitHandle] = {}
        self._lock = anyio.Lock()
        self.splits = 0
        self._may_split = splits

    async def next_unit(self) -> tuple[UnitSpec, UnitCheckpoint] | None:
        async with self._lock:
            if self._stopping():
                return None
            if self._pending:
                return self._assign(self._pending.pop(0))
            return await self._split() if self._may_split else None

    def running(self, unit_id: int, handle: UnitHandle) -> None:
        self._running[unit_id] = handle

    def committed(self, commit: Commit) -> None:
        self.states[commit.unit_id] = commit.checkpoint
        self._on_commit(commit)

    def finished(self, unit_id: int, checkpoint: UnitCheckpoint) -> None:
        self._running.pop(unit_id, None)
        self.states[unit_id] = checkpoint

    def returned(self, unit_id: int, checkpoint: UnitCheckpoint) -> None:
        self._running.pop(unit_id, None)
        self.states[unit_id] = checkpoint
        if unit_id in self._pending:
            self._pending.remove(unit_id)
        if not self.plan.is_done(checkpoint):
            self._pending.insert(0, unit_id)

    def waiting(self) -> list[tuple[UnitSpec, UnitCheckpoint]]:
        """The units not handed out yet, as they would be handed out now."""
        return [self._assign(unit_id) for unit_id in self._pending]

    def _assign(self, unit_id: int) -> tuple[UnitSpec, UnitCheckpoint]:
        return self._spec_for(self.plan[unit_id], self.plan.extent(unit_id)), self.states[unit_id]

    async def _split(self) -> tuple[UnitSpec, UnitCheckpoint] | None:
        """Cut the tail off the running unit with the most unclaimed items, if any can be."""
        for unit_id, handle in self._largest_first():
            candidates = middle_places(self._index, handle.claimed, self.plan.extent(unit_id))
            if not candidates:
                continue
            place = await handle.cap(candidates)
            if place is None:
                continue
            crashpoint("split_capped")
            new = UnitPlan(self.plan.next_id(), place.offset, place.index)
            self.plan = self.plan.with_unit(new)
            await self._record(self.plan)
            crashpoint("split_recorded")
            self.states[new.unit_id] = first_checkpoint(self.states[unit_id].run_id, new)
            self.splits += 1
            log.debug("split unit %d at byte %d (item %d) into unit %d", unit_id,
                      place.offset, place.index, new.unit_id)  # fmt: skip
            return self._assign(new.unit_id)
        return None

    def _largest_first(self) -> list[tuple[int, UnitHandle]]:
        def unclaimed(entry: tuple[int, UnitHandle]) -> int:
            unit_id, handle = entry
            return self.plan.extent(unit_id).end_index - handle.claimed.index

        return sorted(self._running.items(), key=unclaimed, reverse=True)
