"""Which item is being processed: for processors that make side effects idempotent.

``asyncproc.current_item()`` called from inside a processor returns the item's identity.
``key`` (input fingerprint and byte offset) is stable across crashes, resumes and
retries, so it makes a good idempotency key for an API call or a database upsert.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from .._errors import AsyncprocError
from .._public import public


@public
@dataclass(frozen=True, slots=True)
class ItemInfo:
    """The identity of the item a processor is working on."""

    index: int  # 0-based among all items of the input
    offset: int  # byte offset of the item's line in the input
    unit: int  # the work unit the item belongs to
    fingerprint: str  # the input's fingerprint when the run was planned

    @property
    def shard(self) -> int:
        """The unit's id under its engine-v1 name."""
        return self.unit

    @property
    def key(self) -> str:
        """A stable idempotency key: the same for every attempt at this item."""
        return f"{self.fingerprint}:{self.offset}"


class LaneSlot:
    """A lane's mutable view of its current item; one item per lane at a time."""

    __slots__ = ("fingerprint", "index", "offset", "unit")

    def __init__(self, unit: int, fingerprint: str) -> None:
        self.unit, self.fingerprint = unit, fingerprint
        self.index = self.offset = -1


current_slot: ContextVar[LaneSlot | None] = ContextVar("asyncproc_item", default=None)


@public
def current_item() -> ItemInfo:
    """The item the calling processor is working on (raises outside a processor)."""
    slot = current_slot.get()
    if slot is None:
        raise AsyncprocError("current_item() is only available inside a processor call")
    return ItemInfo(slot.index, slot.offset, slot.unit, slot.fingerprint)
