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
from ..processors.loading import Processor
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
    """What every unit of a run shares, handed to the executor by the coordinator."""

    processor: Processor
    processor_args: dict[str, str]
    format: str
    output_kind: str
    retries: int
    timeout: float | None
    fingerprint: str
    stores: Callable[[UnitSpec], UnitStore]  # the store of a unit, in this process
    stopper: Stopper
    workers: int  # units worked on at once
    concurrency: int  # lanes over the whole run
    threads: int  # worker threads for a sync processor, over the whole run
    gate: Gate | None = None  # this process's limits (its share of the run's budgets)
    headers: dict[str, str] | None = None  # the http processor's, never written to disk
    budget: TakeBudget | None = None  # --simulate-crash: items this invocation may take
    stall_after: float = 0.0  # warn when one item holds a unit this long (0: never)
    input_path: str = ""  # the input, to show the line of a stalled item


Job = tuple[UnitSpec, UnitCheckpoint]
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
    return Pipeline(
        setup.processor, format=setup.format, output_kind=setup.output_kind,
        retries=setup.retries, timeout=setup.timeout, threads=threads, gate=setup.gate,
    )  # fmt: skip


class InProcess:
    """``workers`` unit slots and ``concurrency`` lanes, all on this event loop."""

    processes = 1

    def started(self) -> AbstractAsyncContextManager[None]:
        return nullcontext()

    async def run(self, work: WorkSource, setup: RunSetup) -> None:
        with pipeline_for(setup, setup.threads) as pipeline, watch_loop(setup.processor.is_async):
            pool = LanePool(setup.concurrency, pipeline, setup.fingerprint)
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
                if setup.stall_after > 0:
                    watch = StallWatch(pool, setup.stall_after, setup.input_path, setup.format)
                    tg.start_soon(watch.run, ended)
                async with anyio.create_task_group() as slots:
                    for _ in range(setup.workers):
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
