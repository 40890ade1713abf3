"""A unit store without durability, for ``--no-checkpoint`` and the bench's baseline.

It writes segment bytes like :class:`UnitStore` but never fsyncs and writes no
checkpoint file. The coordinator still merges from the checkpoints it holds in memory,
so a run that finishes gives the same output; a run that crashes left nothing to resume
from, and a resume starts every unit again from its beginning.
"""

from __future__ import annotations

from pathlib import Path

from .local import UnitStore, write_all
from .records import UnitCheckpoint


class VolatileUnitStore(UnitStore):
    """Same interface as :class:`UnitStore`; commits are plain appends."""

    def commit(self, data: dict[str, bytes], checkpoint: UnitCheckpoint) -> None:
        del checkpoint  # kept in memory by the coordinator only
        for name, payload in data.items():
            if payload:
                write_all(self._fds[name], payload)


def unit_store(run_dir: str, unit_id: int, durable: bool) -> UnitStore:
    """A unit's store in its run directory: durable, or not (``--no-checkpoint``)."""
    kind = UnitStore if durable else VolatileUnitStore
    return kind(Path(run_dir), unit_id)
