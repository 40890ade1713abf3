"""One process: the rerun after a death goes over what was in flight carefully.

A run killed by one of its items (``os._exit``, a signal, a crash in a C extension) ends
the invocation, so the reruns find the item. A rerun that follows a death (the manifest
still says running: nothing recorded how the last invocation ended) first runs, unit by
unit, the stretch each unfinished unit may have had in flight
(:func:`~.poison.suspects`) one item at a time (:func:`~.poison.careful`), noting each
item in the run's trail file before its call and after it. If that rerun dies too, the
trail ends on the item that never came back: it was in flight in both deaths, so the
next rerun condemns it (a dead letter, never called again) and goes on. The trail is
written with plain ``write()``: the page cache keeps it through the death of the
process, so it needs no fsync (a machine crash is no item's doing). It is removed once
a careful pass is over. A run that did not follow a death pays nothing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import orjson

from .budget import TakeBudget
from .context import LaneSlot
from .executor import InProcess, RunSetup
from .poison import CarefulSource, careful, suspects
from .scheduler import Scheduler

log = logging.getLogger("asyncproc")

TRAIL = "careful.trail"
VERSION = 1
REASON = "killed its worker twice (the process died with it in the processor)"
MAX_TRAIL = 16 * 1024 * 1024  # a trail longer than this is not one of ours


def read_trail(path: Path) -> dict[int, str]:
    """The items a dead careful pass condemns, by offset: those it carried, and the one it
    was calling when it died. The file is untrusted: anything unexpected is skipped."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # none (the usual case), or a link: nothing to go on
        return {}
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(MAX_TRAIL)
    condemned: dict[int, str] = {}
    trying: tuple[int, int] | None = None
    for raw in data.splitlines():
        entry = _entry(raw)
        if entry is None:
            continue
        kind, offset, index = entry
        if kind == "condemned":
            condemned[offset] = REASON
        else:
            trying = (offset, index) if kind == "trying" else None
    if trying is not None and trying[0] not in condemned:
        condemned[trying[0]] = REASON
        log.warning(
            "item %d (line at byte %d) %s: dead-lettered, not called again; the run goes on",
            trying[1], trying[0], REASON,
        )  # fmt: skip
    return condemned


def _entry(raw: bytes) -> tuple[str, int, int] | None:
    try:
        entry = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None  # a line cut short by the death
    if not isinstance(entry, dict) or entry.get("v") != VERSION:
        return None
    kind, offset, index = entry.get("k"), entry.get("o"), entry.get("i")
    if kind not in ("trying", "tried", "condemned"):
        return None
    if not isinstance(offset, int) or not isinstance(index, int) or offset < 0:
        return None
    return str(kind), offset, index


class Trail:
    """The careful pass's notes: each item before and after its call, and what it carries."""

    def __init__(self, path: Path, condemned: dict[int, str]) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        self._fd = os.open(path, flags, 0o600)
        for offset in condemned:
            self._write("condemned", offset, -1)

    def announce(self, slot: LaneSlot, starting: bool) -> None:
        self._write("trying" if starting else "tried", slot.offset, slot.index)

    def _write(self, kind: str, offset: int, index: int) -> None:
        os.write(self._fd, orjson.dumps({"v": VERSION, "k": kind, "o": offset, "i": index}) + b"\n")

    def close(self, over: bool) -> None:
        """Close; ``over``: the careful pass is done, and the trail goes."""
        os.close(self._fd)
        if over:
            self.path.unlink(missing_ok=True)


def forget_trail(run_dir: Path) -> None:
    """A trail left by a pass that was stopped on purpose says nothing about a death."""
    (run_dir / TRAIL).unlink(missing_ok=True)


async def careful_pass(scheduler: Scheduler, setup: RunSetup, run_dir: Path, lanes: int) -> None:
    """Run the stretch of every waiting unit that a death may have caught, carefully."""
    path = run_dir / TRAIL
    log.warning(
        "the last invocation of this run ended without a word (killed, or a crash); going "
        "over what it had in flight one item at a time, to find any item that kills it"
    )
    condemned = read_trail(path)
    trail = Trail(path, condemned)
    plain = replace(setup, processor=careful(setup.processor, condemned, trail.announce),
                    workers=1, concurrency=1, threads=1)  # fmt: skip
    over = False
    try:
        for spec, start in scheduler.waiting():
            source = CarefulSource((spec, start), scheduler)
            budget = TakeBudget(suspects(lanes, spec.batch_size))
            await InProcess().run(source, replace(plain, budget=budget))
            scheduler.returned(spec.unit_id, source.checkpoint)
            if setup.stopper.reason is not None:
                return
        over = True
    finally:
        trail.close(over)
