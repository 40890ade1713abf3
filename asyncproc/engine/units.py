"""Work units: the plan as a partition of the input, and where to cut it. Pure functions.

A unit is a byte range that starts at a line start and ends where the next unit (by
start) begins. Cutting a unit in two adds a unit that starts at an indexed point (a
line start whose item index the :class:`LineIndex` knows) beyond what the unit has
claimed; the cut unit then simply ends there.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..storage.records import LineIndex, UnitCheckpoint, UnitPlan

# A unit is split only if at least this many of its items are still unclaimed.
MIN_SPLIT_ITEMS = 64
CANDIDATES = 8  # indexed points offered around the middle of a range, for a running unit


@dataclass(frozen=True, slots=True)
class Place:
    """An indexed point of the input: a line start and the index of the item there."""

    offset: int
    index: int


@dataclass(frozen=True, slots=True)
class Extent:
    """Where a unit ends, in bytes and in items (both exclusive)."""

    end: int
    end_index: int


class Plan:
    """The units of a run, with the size and item count that close the last one."""

    def __init__(self, units: Iterable[UnitPlan], size: int, total_items: int) -> None:
        self.units = tuple(sorted(units, key=lambda u: u.start))
        self.size, self.total_items = size, total_items
        self._by_id = {u.unit_id: u for u in self.units}

    def __getitem__(self, unit_id: int) -> UnitPlan:
        return self._by_id[unit_id]

    def __iter__(self) -> Iterator[UnitPlan]:
        return iter(self.units)

    def __len__(self) -> int:
        return len(self.units)

    def extent(self, unit_id: int) -> Extent:
        """The unit's end: the next unit's start, or the end of the input."""
        position = self.units.index(self._by_id[unit_id])
        if position + 1 < len(self.units):
            after = self.units[position + 1]
            return Extent(after.start, after.first_index)
        return Extent(self.size, self.total_items)

    def items(self, unit_id: int) -> int:
        return self.extent(unit_id).end_index - self._by_id[unit_id].first_index

    def next_id(self) -> int:
        return max(self._by_id) + 1

    def with_unit(self, unit: UnitPlan) -> Plan:
        """The plan with ``unit`` added: the unit it falls inside now ends at its start."""
        if unit.unit_id in self._by_id or any(u.start == unit.start for u in self.units):
            raise ValueError(f"unit {unit.unit_id} at {unit.start} overlaps the plan")
        return Plan((*self.units, unit), self.size, self.total_items)

    def is_done(self, checkpoint: UnitCheckpoint) -> bool:
        return checkpoint.offset >= self.extent(checkpoint.unit_id).end


def places_between(index: LineIndex, low: int, high: int) -> list[Place]:
    """The indexed points strictly inside ``(low, high)`` (byte offsets)."""
    first = bisect.bisect_right(index.offsets, low)
    last = bisect.bisect_left(index.offsets, high)
    return [Place(index.offsets[k], index.indexes[k]) for k in range(first, last)]


def middle_places(
    index: LineIndex, claimed: Place, end: Extent, count: int = CANDIDATES
) -> list[Place]:
    """Up to ``count`` indexed points nearest the middle (in items) of what is unclaimed.

    A running unit moves on while the coordinator asks it to stop at one of them; it
    takes the best one still ahead of what it has claimed (:func:`choose`).
    """
    if end.end_index - claimed.index < MIN_SPLIT_ITEMS:
        return []
    middle = (claimed.index + end.end_index) // 2
    inside = [
        p
        for p in places_between(index, claimed.offset, end.end)
        if claimed.index < p.index < end.end_index
    ]
    inside.sort(key=lambda p: (abs(p.index - middle), p.offset))
    return sorted(inside[:count], key=lambda p: p.offset)


def choose(candidates: Sequence[Place], claimed: Place, end_index: int) -> Place | None:
    """The candidate nearest the middle of ``[claimed, end)`` that leaves both sides work."""
    middle = (claimed.index + end_index) // 2
    ahead = [
        p
        for p in candidates
        if p.offset >= claimed.offset
        and p.index - claimed.index >= MIN_SPLIT_ITEMS // 2
        and end_index - p.index >= MIN_SPLIT_ITEMS // 2
    ]
    return min(ahead, key=lambda p: (abs(p.index - middle), p.offset), default=None)


def recut(plan: Plan, index: LineIndex, resume_at: dict[int, Place], wanted: int) -> Plan:
    """Split the largest remaining ranges until ``wanted`` units have work, if they can.

    ``resume_at`` maps each unfinished unit to where it resumes; nothing runs yet, so a
    cut may fall anywhere past that point. Used when a run resumes with more parallelism
    than it was planned with.
    """
    remaining = dict(resume_at)
    while len(remaining) < wanted:
        cut = _best_cut(plan, index, remaining)
        if cut is None:
            break
        _, place = cut
        new = UnitPlan(plan.next_id(), place.offset, place.index)
        plan = plan.with_unit(new)
        remaining[new.unit_id] = place
    return plan


def _best_cut(
    plan: Plan, index: LineIndex, remaining: dict[int, Place]
) -> tuple[int, Place] | None:
    """The largest remaining range's middle indexed point, if it is worth cutting."""
    by_size = sorted(
        remaining, key=lambda u: plan.extent(u).end_index - remaining[u].index, reverse=True
    )
    for unit_id in by_size:
        end = plan.extent(unit_id)
        place = choose(middle_places(index, remaining[unit_id], end), remaining[unit_id],
                       end.end_index)  # fmt: skip
        if place is not None:
            return unit_id, place
    return None


@dataclass(frozen=True, slots=True)
class UnitSpec:
    """Everything an executor needs to run one unit: plain data, so it can travel.

    ``end`` and ``end_index`` are the unit's extent when it was handed out; a split may
    shorten a running unit later, never lengthen it.
    """

    run_id: str
    run_dir: str
    unit_id: int
    start: int
    end: int
    first_index: int
    end_index: int
    input_path: str
    fingerprint: str
    format: str
    output_kind: str
    batch_size: int
    retries: int
    timeout: float | None
    commit_interval: float
    durable: bool = True
    one_batch_per_commit: bool = False  # --simulate-crash: the crash lands where asked
    storage_options: dict[str, Any] = field(default_factory=dict)  # for URL paths; never stored


def first_checkpoint(run_id: str, unit: UnitPlan) -> UnitCheckpoint:
    """The state of a unit nobody has touched yet."""
    return UnitCheckpoint(
        run_id=run_id, unit_id=unit.unit_id, generation=0, offset=unit.start,
        next_index=unit.first_index, processed=0, failed=0, attempts=0, segments=(),
        dead_segments=(), updated_at=time.time(),
    )  # fmt: skip
