"""Where units run: an executor the coordinator is handed, never chooses.

The coordinator's :class:`WorkSource` hands out units one at a time, and splits a
running unit (through its :class:`UnitHandle`) when an executor has idle capacity and
nothing is pending. Executors: :class:`InProcess` (here: unit slots and one pool of
lanes on this event loop), worker processes (``asyncproc.processes``), and later a
cluster. Progress, limits, signals and the merge stay with the coordinator.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol

import anyio

from ..limits.gate import Gate
from ..processors.loading import Processor, load_processor
from ..storage.location import Location
from ..storage.records import UnitCheckpoint
from ..storage.unitstore import UnitStore, VolatileUnitStore
from .budget import TakeBudget
from .lanes import LanePool
from .pipeline import Pipeline
from .stall import StallWatch
from .stopping import Stopper
from .unit import Commit, UnitRun
from .units import Place, UnitSpec
from .watchdog import watch_loop
from .wire import WorkerSetup


class UnitHandle(Protocol):
    """A running unit, as the coordinator sees it."""

    @property
    def claimed(self) -> Place:
        """How far the unit has handed out items (as last known)."""
        ...

    async def cap(self, candidates: Sequence[Place]) -> Place | None:
        """Ask the unit to end at one of ``candidates``; the one it took, or None."""
        ...


class WorkSource(Protocol):
    """The coordinator's side: units to run, and what became of them."""

    async def next_unit(self) -> tuple[UnitSpec, UnitCheckpoint] | None:
        """The next unit and where it resumes, or None: no work is left for this slot."""
        ...

    def running(self, unit_id: int, handle: UnitHandle) -> None: ...

    def committed(self, commit: Commit) -> None: ...

    def finished(self, unit_id: int, checkpoint: UnitCheckpoint) -> None: ...

    def returned(self, unit_id: int, checkpoint: UnitCheckpoint) -> None:
        """A unit given back unfinished (its worker died): hand it out again from there."""
        ...


@dataclass(frozen=True, slots=True)
class RunSetup:
    """What every unit of a run shares, handed to the executor by the coordinator:
    the data a worker is sent (``shared``) and the objects of this process."""

    shared: WorkerSetup
    processor: Processor
    stores: Callable[[UnitSpec], UnitStore]  # the store of a unit, in this process
    stopper: Stopper
    gate: Gate | None = None  # this process's limits (its share of the run's budgets)
    budget: TakeBudget | None = None  # --simulate-crash: items this invocation may take

    @classmethod
    def made(
        cls, shared: WorkerSetup, stores: Callable[[UnitSpec], UnitStore], stopper: Stopper,
        gate: Gate | None = None, processor: Processor | None = None,
    ) -> RunSetup:  # fmt: skip
        """The one way a setup is made: in a worker (the processor loaded here, from its
        spec) or in the coordinator (``processor`` already loaded)."""
        if processor is None:
            processor = load_processor(shared.processor, shared.processor_args, shared.headers)
        return cls(shared, processor, stores, stopper, gate)


Job = tuple[UnitSpec, UnitCheckpoint]


class OneUnit:
    """A work source of one unit, then nothing: a Dask task's, or a careful rerun's.
    Its commits go to ``report``; ``checkpoint`` is the unit's latest."""

    def __init__(self, job: Job, report: Callable[[Commit], None]) -> None:
        self._job: Job | None = job
        self._report = report
        self.checkpoint = job[1]

    async def next_unit(self) -> Job | None:
        job, self._job = self._job, None
        return job

    def running(self, unit_id: int, handle: UnitHandle) -> None:
        del unit_id, handle  # never split: cut up front, or a short stretch

    def committed(self, commit: Commit) -> None:
        self.checkpoint = commit.checkpoint
        self._report(commit)

    def finished(self, unit_id: int, checkpoint: UnitCheckpoint) -> None:
        del unit_id
        self.checkpoint = checkpoint

    def returned(self, unit_id: int, checkpoint: UnitCheckpoint) -> None:
        self.finished(unit_id, checkpoint)


# Reruns the waiting units' stretches a death may have caught (work, setup, units, lanes).
AfterDeath = Callable[[WorkSource, RunSetup, list[Job], int], Awaitable[None]]


class Executor(Protocol):
    """Runs units from ``work`` until it has none left, or the run stops."""

    @property
    def processes(self) -> int:
        """Worker processes it runs units in (1: this one)."""
        ...

    def started(self) -> AbstractAsyncContextManager[None]:
        """Around the whole invocation: start what takes long to start (processes)."""
        ...

    async def run(self, work: WorkSource, setup: RunSetup) -> None: ...


def local_store(spec: UnitSpec) -> UnitStore:
    """The default store of a unit: files in its run directory, or objects under its URL."""
    kind = UnitStore if spec.durable else VolatileUnitStore
    return kind(Location(spec.run_dir, spec.storage_options).storage(), spec.unit_id)


def pipeline_for(setup: RunSetup, threads: int) -> Pipeline:
    shared = setup.shared
    return Pipeline(
        setup.processor, format=shared.format, output_kind=shared.output_kind,
        retries=shared.retries, timeout=shared.timeout, threads=threads, gate=setup.gate,
    )  # fmt: skip


class InProcess:
    """``workers`` unit slots and ``concurrency`` lanes, all on this event loop."""

    processes = 1

    def started(self) -> AbstractAsyncContextManager[None]:
        return nullcontext()

    async def run(self, work: WorkSource, setup: RunSetup) -> None:
        with (
            pipeline_for(setup, setup.shared.threads) as pipeline,
            watch_loop(setup.processor.is_async),
        ):
            pool = LanePool(setup.shared.concurrency, pipeline, setup.shared.fingerprint)
            try:
                await self._run(work, setup, pool)
            finally:
                with anyio.CancelScope(shield=True):
                    await pipeline.aclose()

    async def _run(self, work: WorkSource, setup: RunSetup, pool: LanePool) -> None:
        if not setup.stopper.attach(pool):
            return
        ended = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_lanes, pool, ended)
                shared = setup.shared
                if shared.stall_after > 0:
                    watch = StallWatch(pool, shared.stall_after, shared.input_path, shared.format)
                    tg.start_soon(watch.run, ended)
                async with anyio.create_task_group() as slots:
                    for _ in range(shared.workers):
                        slots.start_soon(_slot, work, setup, pool)
                pool.close()
        finally:
            setup.stopper.detach(pool)


async def _lanes(pool: LanePool, ended: anyio.Event) -> None:
    try:
        await pool.run()
    finally:
        ended.set()


async def _slot(work: WorkSource, setup: RunSetup, pool: LanePool) -> None:
    """Run one unit after another while the coordinator has any."""
    while (job := await work.next_unit()) is not None:
        spec, start = job
        unit = UnitRun(
            spec, start, setup.stores(spec), pool.size, work.committed, pool.wake, setup.budget
        )
        work.running(spec.unit_id, unit)
        pool.add(unit)
        try:
            final = await unit.run()
        finally:
            pool.remove(unit)
        work.finished(spec.unit_id, final)
