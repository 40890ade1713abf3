"""Poison items: an item whose processing kills the process working on it.

After a death nobody can tell which in-flight item did it, and every item a unit may have
had in flight lies within :func:`suspects` items of its last checkpoint. So what follows
a death reruns that stretch *carefully*: one lane, one item in the processor at a time,
each announced before the call and after it (:func:`careful`). A second death with an
item announced and not finished names that item: it was in flight both times, so it is
condemned, and the next careful pass fails it at once with
:class:`~asyncproc._errors.PoisonItemError` (a dead letter) without calling the
processor. Where the deaths are seen differs: ``--processes`` in the parent
(:mod:`asyncproc.processes.poison`), one process in the reruns (:mod:`.recovery`).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread

from .._errors import PoisonItemError
from ..processors.loading import Processor
from ..storage.records import UnitCheckpoint
from .context import LaneSlot, current_slot
from .unit import window
from .units import UnitSpec

Job = tuple[UnitSpec, UnitCheckpoint]

# Told of each item a careful pass calls: (slot, True) before the call, (slot, False) after.
Announce = Callable[[LaneSlot, bool], None]


def suspects(lanes: int, batch_size: int) -> int:
    """Items past its last known checkpoint a unit may have had in flight at a death:
    its window, and once more for a commit made durable but not yet heard of."""
    return 2 * window(lanes, batch_size)


def careful(
    processor: Processor, condemned: dict[int, str], announce: Announce,
    suspects: frozenset[int] = frozenset(),
) -> Processor:  # fmt: skip
    """The processor as a careful pass calls it: each item announced before and after
    its call, a condemned one (by its offset) failed at once without a call, and the
    suspects (by offset) called one at a time."""
    one_at_a_time = anyio.Lock()

    async def call(item: Any) -> Any:
        slot = current_slot.get()
        if slot is None:  # not a lane's call (none in a careful pass): nothing to name
            return await _plain(processor, item)
        reason = condemned.get(slot.offset)
        if reason is not None:
            raise PoisonItemError(reason, shard=slot.unit, index=slot.index)
        if slot.offset in suspects:
            async with one_at_a_time:
                return await _announced(processor, item, slot, announce)
        return await _announced(processor, item, slot, announce)

    # No ``aclose``: the wrapped processor's resources (the http client) outlive the pass.
    return Processor(processor.spec, call, True)


async def _announced(processor: Processor, item: Any, slot: LaneSlot, announce: Announce) -> Any:
    announce(slot, True)
    value = await _plain(processor, item)
    announce(slot, False)
    return value


async def _plain(processor: Processor, item: Any) -> Any:
    if processor.is_async:
        return await processor.fn(item)
    context = contextvars.copy_context()  # current_item() works in the thread too
    return await anyio.to_thread.run_sync(context.run, processor.fn, item, abandon_on_cancel=True)
