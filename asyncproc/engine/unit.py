"""One attempt at one work unit: read its range, let the run's lanes take its items, commit.

A :class:`UnitRun` is work for the run's lanes (:class:`~.lanes.LaneWork`): it owns
two tasks, a *feeder* that reads the unit's range a chunk at a time into a bounded queue
of lines, and a *committer* that makes the ordered prefix (:class:`~.ordering.Ordering`)
durable every ``batch_size`` items, or every ``commit_interval`` seconds, as its
:class:`~.attempt.Attempt`. The lanes that take its items belong to the whole run
(:mod:`.lanes`): a unit lends them work while it has lines and window.

A running unit can be *capped* (:meth:`UnitRun.cap`): it agrees to end at an indexed
point beyond everything it has claimed (handed to lanes), drops the lines it read past
that point, and never reads further. The coordinator then records the new unit that
starts there; until it has, a crash simply forgets the cap.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio

from ..storage.records import UnitCheckpoint
from ..storage.unitstore import UnitStore
from .attempt import Attempt
from .budget import TakeBudget
from .committing import commit_batches
from .lanes import EVERY_LANE, FEED_LOW_WATER, LaneWork
from .ordering import Ordering, Point
from .reader import LineReader
from .sources import open_input
from .units import Place, UnitSpec, choose

# Items lanes may run past a full batch while it commits: rides out a slow fsync with
# small batches, without letting a large --batch-size multiply the window.
COMMIT_SLACK = 8192


def window(lanes: int, batch_size: int) -> int:
    """How far lanes may run ahead of a unit's last commit: room for every lane, a batch
    being committed and the slack that rides out a slow fsync."""
    return max(4 * lanes, 64) + batch_size + min(7 * batch_size, COMMIT_SLACK)


@dataclass(frozen=True, slots=True)
class Commit:
    """What one durable commit of one unit added."""

    unit_id: int
    processed: int
    failed: int
    checkpoint: UnitCheckpoint
    claimed: Place  # how far the unit had handed out items, for choosing splits
    last_error: str | None = None


class UnitRun(LaneWork[bytes]):
    """One attempt at one unit, resuming from ``start``."""

    def __init__(
        self, spec: UnitSpec, start: UnitCheckpoint, store: UnitStore, lanes: int,
        on_commit: Callable[[Commit], None], wake_lanes: Callable[[int], None],
        budget: TakeBudget | None = None,
    ) -> None:  # fmt: skip
        order = Ordering(spec.batch_size, start.offset)
        limit = window(lanes, spec.batch_size)
        super().__init__(spec.unit_id, order, limit, start.next_index, wake_lanes)
        self.spec = spec
        self.end, self.end_index = spec.end, spec.end_index
        self.eof = False
        self.starved = False  # the --simulate-crash budget is spent: read no further
        self._budget = budget
        self._unread = start.offset  # the first line start not yet queued
        self._on_commit = on_commit
        self._attempt = Attempt(start, store, opened="before_first_commit")

    @property
    def checkpoint(self) -> UnitCheckpoint:
        """The last durable state."""
        return self._attempt.durable

    @property
    def claimed(self) -> Place:
        """The first line no lane has taken, and the index of its item."""
        offset = self.starts[0] if self.starts else self._unread
        return Place(offset, self.first_index + self.order.taken)

    async def run(self) -> UnitCheckpoint:
        """Process the rest of the unit (or until stopped); return its last checkpoint."""
        await anyio.to_thread.run_sync(self._attempt.open)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._feed)
                await self._commit_loop()
                tg.cancel_scope.cancel()  # a stopped unit's feeder may still be reading
        finally:
            self._attempt.close()
        return self._attempt.durable

    # -- capping ----------------------------------------------------------------------

    async def cap(self, candidates: Sequence[Place]) -> Place | None:
        """End the unit at one of ``candidates`` beyond what it has claimed, if it can.

        Lines already read past the new end are dropped and nothing past it is read
        again. Returns the chosen point, or None (the unit has moved past them all).
        """
        if self.stopping:
            return None
        place = choose(candidates, self.claimed, self.end_index)
        if place is None or place.offset >= self.end:
            return None
        self.end, self.end_index = place.offset, place.index
        cut = bisect.bisect_left(self.starts, place.offset)
        while len(self.starts) > cut:
            self.starts.pop()
            self.lines.pop()
            self.ends.pop()
        if self._unread >= place.offset:
            self._finish_reading()
        return place

    # -- feeder -----------------------------------------------------------------------

    async def _feed(self) -> None:
        async with open_input(self.spec) as fh:
            await fh.seek(self._unread)
            reader = LineReader(fh, self._unread, self.spec.input_path, format=self.spec.format)
            while not self._no_more() and (lines := await reader.next(self.end)) is not None:
                self._queue(*lines)
                self._unread = reader.unread
                while len(self.lines) > FEED_LOW_WATER and not self.stopping:
                    await self.space.wait()
            self._unread = max(self._unread, reader.unread)
        if self.starved:
            self.batch.fire()  # commit what was taken; the unit is not done
        elif not self.stopping:
            self._finish_reading()

    def _no_more(self) -> bool:
        return self.stopping or self.starved

    def _queue(self, starts: list[int], lines: list[bytes], ends: list[int]) -> None:
        """Queue whole lines, dropping any a cap has put past the end meanwhile."""
        if starts and starts[-1] >= self.end:
            keep = bisect.bisect_left(starts, self.end)
            starts, lines, ends = starts[:keep], lines[:keep], ends[:keep]
        if self._budget is not None and (granted := self._budget.grant(len(starts))) < len(starts):
            starts, lines, ends = starts[:granted], lines[:granted], ends[:granted]
            self.starved = True
        self.queue(starts, lines, ends)

    def _finish_reading(self) -> None:
        self.eof = True
        self.batch.fire()

    # -- committer --------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """Every item of the unit is ordered (not only every item taken)."""
        return self.eof and not self.lines and self.order.complete

    def _over(self) -> bool:
        """Nothing more will be ordered: complete, stopped and drained, or lanes gone."""
        if self.lanes_ended:
            return True
        drained = (self.eof or self.starved) and not self.lines
        return self.order.complete and (self.stopping or drained)

    async def _commit_loop(self) -> None:
        """Commit batch by batch (:func:`.committing.commit_batches`)."""
        await commit_batches(
            self.order, self.batch, self.spec.commit_interval, self._over, self._commit,
            capped=self.spec.one_batch_per_commit,
        )  # fmt: skip

    async def _commit(self, point: Point, final: bool = False) -> None:
        """Make the ordered prefix up to ``point`` durable (:meth:`.Attempt.commit`)."""
        offset = self.end if final and self.complete else point.offset
        cut = await self._attempt.commit(self.order, point, offset)
        if cut is None:
            return  # nothing new to say
        self.order.made_durable(point)
        self._wake(EVERY_LANE)  # the window moved: lanes may take more of this unit's items
        self._on_commit(Commit(
            self.unit_id, cut.ok, cut.failed, self._attempt.durable, self.claimed,
            self.last_error,
        ))  # fmt: skip
