"""One attempt's segments and commits, shared by a unit's attempt and a retry's.

Every attempt writes two fresh segments named after it (``UUUU.AAA-rrrrrr.out`` and
``.dead``: the unit, the attempt's number and a random tail, so a name is never reused)
and commits the same way: cut the ordered prefix at a point, append the cut to the two
segments and point a new checkpoint generation at their committed lengths, off the
event loop. What differs (where the final commit ends, what to tell afterwards) stays
with the caller.
"""

from __future__ import annotations

import secrets
from dataclasses import replace

import anyio

from ..storage.faults import crashpoint
from ..storage.records import SegmentRef, UnitCheckpoint
from ..storage.unitstore import UnitStore
from .ordering import Cut, Ordering, Point


def attempt_name(start: UnitCheckpoint) -> str:
    """The name of the attempt after ``start``: unit, attempt number, a random tail."""
    return f"{start.unit_id:04d}.{start.attempts + 1:03d}-{secrets.token_hex(3)}"


class Attempt:
    """The durable side of one attempt, resuming from ``start``.

    ``opened`` and ``committed`` name the crash points (:func:`crashpoint`) hit once the
    segments are open and after each commit is written, if any.
    """

    def __init__(
        self, start: UnitCheckpoint, store: UnitStore, *, opened: str | None = None,
        committed: str | None = None,
    ) -> None:  # fmt: skip
        name = attempt_name(start)
        self.out_name, self.dead_name = f"{name}.out", f"{name}.dead"
        self.first_index = start.next_index  # the index of sequence number 0
        self.durable = replace(start, attempts=start.attempts + 1)  # the last durable state
        self._store, self._opened, self._committed = store, opened, committed

    def open(self) -> None:
        """Create the attempt's two segments (blocking: call it from a worker thread)."""
        self._store.open_segment(self.out_name)
        self._store.open_segment(self.dead_name)
        if self._opened is not None:
            crashpoint(self._opened)

    def close(self) -> None:
        self._store.close()

    async def commit(self, order: Ordering, point: Point, offset: int) -> Cut | None:
        """Make ``order``'s prefix up to ``point`` durable, with ``offset`` reached.

        Returns what was cut, or None when there was nothing new to say. The caller then
        moves the window (:meth:`Ordering.made_durable`): its items are durable now.
        """
        previous = self.durable
        if point.next == order.durable and offset == previous.offset:
            return None
        cut = order.cut(point)
        checkpoint = previous.advanced(
            SegmentRef(self.out_name, point.out_len), SegmentRef(self.dead_name, point.dead_len),
            cut.ok, cut.failed, offset=offset, next_index=self.first_index + point.next,
        )  # fmt: skip
        data = {self.out_name: cut.out, self.dead_name: cut.dead}
        self.durable = await anyio.to_thread.run_sync(self._write, data, checkpoint)
        return cut

    def _write(self, data: dict[str, bytes], checkpoint: UnitCheckpoint) -> UnitCheckpoint:
        written = self._store.commit(data, checkpoint)  # as written: with its segments' CRCs
        if self._committed is not None:
            crashpoint(self._committed)
        return written
