"""Stall warnings: say so when one item has held back its unit for a long time.

Results are committed in input order, so one item that hangs holds back every item of
its unit behind it; from outside the run just looks slow. A :class:`StallWatch` samples
each running unit's *head* (the first item not yet ordered) and, once the same item has
been the head for ``after`` seconds while in flight, logs a warning naming it as
``item N`` (its index) with its line, the unit and how long it has waited; then again at
doubling intervals (30 s, 60 s, 120 s...) while it still waits. It reads only what the
lanes already keep (the ordering counters and each lane's current item), so the hot
path pays nothing; the waiting time is measured from the first sample that saw the item
at the head, so it is exact to one sampling period.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import anyio

from .context import LaneSlot
from .items import items_for
from .lanes import LanePool

log = logging.getLogger("asyncproc")

MAX_PERIOD = 1.0  # seconds between samples, at most
SHOWN = 80  # characters of the line shown


@dataclass(slots=True)
class _Head:
    index: int  # the item at the head of a unit
    since: float  # when a sample first saw it there
    warn_at: float  # seconds of waiting that bring the next warning


class StallWatch:
    """Samples the units of one lane pool; see the module docstring."""

    def __init__(self, pool: LanePool, after: float, input_path: str, fmt: str) -> None:
        self._pool, self._after = pool, after
        self._input, self._fmt = input_path, fmt
        self._heads: dict[int, _Head] = {}
        self.period = min(MAX_PERIOD, max(after / 10, 0.01))

    async def run(self, ended: anyio.Event) -> None:
        """Sample until ``ended`` is set (the lanes are gone)."""
        while not ended.is_set():
            with anyio.move_on_after(self.period):
                await ended.wait()
            for unit_id, index, waited in self.due(anyio.current_time()):
                await self._warn(unit_id, index, waited)

    def due(self, now: float) -> list[tuple[int, int, float]]:
        """The (unit, item index, seconds waited) that should be reported now."""
        reports = []
        running = {unit.unit_id: unit for unit in self._pool.units}
        for unit_id in set(self._heads) - set(running):
            del self._heads[unit_id]
        for unit_id, unit in running.items():
            order = unit.order
            if order.next >= order.taken:  # nothing in flight at the head
                self._heads.pop(unit_id, None)
                continue
            index = unit.first_index + order.next
            head = self._heads.get(unit_id)
            if head is None or head.index != index:
                self._heads[unit_id] = _Head(index, now, self._after)
            elif now - head.since >= head.warn_at:
                reports.append((unit_id, index, now - head.since))
                head.warn_at *= 2
        return reports

    async def _warn(self, unit_id: int, index: int, waited: float) -> None:
        slot = next((s for s in self._pool.slots if _holds(s, unit_id, index)), None)
        line = "?" if slot is None else await anyio.to_thread.run_sync(self._line, slot.offset)
        log.warning(
            "item %d has been in flight for %.0fs, holding back the commits of unit %d: %s",
            index, waited, unit_id, line,
        )  # fmt: skip

    def _line(self, offset: int) -> str:
        """The item's line as the user would recognise it: decoded, stripped, cut short."""
        try:
            with Path(self._input).open("rb") as fh:
                fh.seek(offset)
                data = fh.read(4 * SHOWN)
        except OSError:
            return "?"
        kind = items_for(self._fmt)
        end = kind.line_end(data)
        text = kind.first(data[:end] if end else data).decode("utf-8", "replace").strip()
        return repr(text if len(text) <= SHOWN else text[: SHOWN - 3] + "...")


def _holds(slot: LaneSlot, unit_id: int, index: int) -> bool:
    return slot.unit == unit_id and slot.index == index
