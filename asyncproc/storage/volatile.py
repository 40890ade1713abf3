"""A shard store without durability, for ``--no-checkpoint`` and the bench's baseline.

It writes segment bytes like :class:`ShardStore` but never fsyncs and writes no
checkpoint file. The coordinator still merges from the checkpoints it holds in memory,
so a run that finishes gives the same output; a run that crashes left nothing to resume
from, and a resume starts every shard again from its beginning.
"""

from __future__ import annotations

from .local import ShardStore, write_all
from .records import ShardCheckpoint


class VolatileShardStore(ShardStore):
    """Same interface as :class:`ShardStore`; commits are plain appends."""

    def commit(self, data: dict[str, bytes], checkpoint: ShardCheckpoint) -> None:
        del checkpoint  # kept in memory by the coordinator only
        for name, payload in data.items():
            if payload:
                write_all(self._fds[name], payload)


def store_for(durable: bool) -> type[ShardStore]:
    """The store class a shard worker uses."""
    return ShardStore if durable else VolatileShardStore
