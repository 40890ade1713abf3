"""Where shard work runs: an executor the coordinator is handed, never chooses.

In-process (:class:`InProcess`, here) or in worker processes (``asyncproc.processes``);
the coordinator keeps the run lock, progress, limits and the merge either way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import anyio

from ..storage.records import ShardCheckpoint
from .processors import Processor
from .stopping import Stopper
from .worker import Commit, ShardSpec, ShardWorker

Job = tuple[ShardSpec, ShardCheckpoint]


class Executor(Protocol):
    """Runs every job to its end, reporting each durable commit."""

    async def run(
        self, jobs: Sequence[Job], processor: Processor, stopper: Stopper,
        on_commit: Callable[[Commit], None], concurrency: int,
    ) -> None: ...  # fmt: skip


class InProcess:
    """Every shard worker on this event loop."""

    async def run(
        self, jobs: Sequence[Job], processor: Processor, stopper: Stopper,
        on_commit: Callable[[Commit], None], concurrency: int,
    ) -> None:  # fmt: skip
        # Fewer lanes than shards: the shards take turns, one lane each.
        limiter = anyio.CapacityLimiter(max(1, min(concurrency, len(jobs))))
        async with anyio.create_task_group() as tg:
            for spec, state in jobs:
                worker = ShardWorker(spec, processor, state, on_commit)
                tg.start_soon(_run_one, worker, limiter, stopper)


async def _run_one(worker: ShardWorker, limiter: anyio.CapacityLimiter, stopper: Stopper) -> None:
    async with limiter:
        if not stopper.attach(worker):
            return
        try:
            await worker.run()
        finally:
            stopper.detach(worker)
