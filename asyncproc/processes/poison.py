"""Poison items under ``--processes`` (see :mod:`asyncproc.engine.poison`): the parent's side.

When a child dies mid-run (``os._exit``, a signal, a crash in a C extension) the parent
cannot tell which of its in-flight items did it. Every item a lost unit may have had in
flight lies within :func:`suspects` items of its last checkpoint the parent heard of, so
the parent reruns that stretch of each lost unit in a *careful* child: each item is
announced to the parent (``trying``) before it is called and when it is back
(``tried``), and at most that many items are taken (a take budget). If the careful child
dies too, an item alone in the processor at that moment was in flight in both deaths:
it is condemned (:func:`quarantine` narrows several down), and the next careful child
dead-letters it without calling the processor
(:class:`~asyncproc._errors.PoisonItemError`, "killed its worker (exit 3) twice").
A careful child that gets through the stretch proves the death was not an item's, and
one that dies with no item in the processor (it could not load the processor, say)
blames none; either way the unit goes back to the run from its new checkpoint and the
run goes on.

The careful child wraps its processor with :func:`~asyncproc.engine.poison.careful`
and announces over the pipe (:func:`announcer`); :func:`quarantine` drives the careful
children from the parent.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..engine.context import LaneSlot
from ..engine.executor import OneUnit, WorkSource
from ..engine.poison import Announce
from ..engine.units import Place, UnitSpec
from ..storage.records import UnitCheckpoint
from .wire import line

log = logging.getLogger("asyncproc")

MAX_DEATHS = 20  # worker deaths one slot may recover from in one invocation


def how_it_died(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"exit {code}"


def announcer(send: Callable[[bytes], None]) -> Announce:
    """A careful child tells its parent of each item it calls: ``trying``, then ``tried``."""

    def announce(slot: LaneSlot, starting: bool) -> None:
        send(line({"trying" if starting else "tried": [slot.unit, slot.offset, slot.index]}))

    return announce


# -- the parent's side -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one careful child ended: cleanly, or dead with the items it was calling."""

    died: bool
    code: int
    caught: tuple[Place, ...]  # announced and not back at its death


# Runs one careful child (its setup's extra keys, its work source) to its end.
Careful = Callable[[dict[str, Any], WorkSource], Awaitable[Attempt]]


async def quarantine(
    spec: UnitSpec, start: UnitCheckpoint, stretch: int, run_careful: Careful, work: WorkSource
) -> UnitCheckpoint:
    """Rerun the ``stretch`` items after ``start`` carefully, condemning each item that
    kills a careful child; the unit's checkpoint after them (or at its end).

    A careful child runs at full width, telling which items are in the processor. If it
    dies with one item there, that item was in flight in both deaths: condemned. With
    several, they become suspects, and the next careful child calls suspects one at a
    time (the others at full width): the suspect in the processor at its death is
    condemned.
    """
    end_index = start.next_index + stretch
    condemned: dict[int, str] = {}
    suspects: set[int] = set()
    checkpoint = start
    for _ in range(MAX_DEATHS):
        if checkpoint.offset >= spec.end or checkpoint.next_index >= end_index:
            break
        source = OneUnit((spec, checkpoint), work.committed)
        extra = {"careful": True, "budget": end_index - checkpoint.next_index,
                 "condemned": sorted(condemned.items()), "suspects": sorted(suspects)}  # fmt: skip
        attempt = await run_careful(extra, source)
        checkpoint = source.checkpoint
        if not attempt.died:
            break
        culprit = _culprit(attempt.caught, suspects)
        if culprit is None:
            if not attempt.caught:  # no item to blame (the processor would not load, say)
                log.warning(
                    "a worker process rerunning unit %d carefully %s with no item in the "
                    "processor; the unit goes on without a careful rerun", spec.unit_id,
                    _ended(attempt.code),
                )  # fmt: skip
                break
            suspects = {p.offset for p in attempt.caught}
            continue
        reason = f"killed its worker ({how_it_died(attempt.code)}) twice"
        condemned[culprit.offset] = reason
        suspects.discard(culprit.offset)
        log.warning(
            "item %d (line at byte %d) %s: dead-lettered, not called again; the run goes on",
            culprit.index, culprit.offset, reason,
        )  # fmt: skip
    return checkpoint


def _culprit(caught: tuple[Place, ...], suspects: set[int]) -> Place | None:
    """The one item a death can be pinned on: alone in the processor, or the one suspect
    there (suspects are called one at a time)."""
    if len(caught) == 1:
        return caught[0]
    blamed = [p for p in caught if p.offset in suspects]
    return blamed[0] if len(blamed) == 1 else None


def _ended(code: int) -> str:
    return f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
