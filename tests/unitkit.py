"""Running units in-process the way the engine does, for tests that hold a store or a unit.

:class:`OneUnit` is a work source that hands out one unit, once; :func:`run_unit` runs
it through the real :class:`~asyncproc.engine.executor.InProcess` executor (unit slots,
the run's lane pool, the committer) with whatever store factory the test hands in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncproc.engine.executor import InProcess, RunSetup, UnitHandle, local_store
from asyncproc.engine.stopping import Stopper
from asyncproc.engine.unit import Commit
from asyncproc.engine.units import UnitSpec, first_checkpoint
from asyncproc.engine.wire import WorkerSetup
from asyncproc.processors.loading import Fn, load_processor
from asyncproc.storage.records import Manifest, UnitCheckpoint, UnitPlan
from asyncproc.storage.unitstore import UnitStore

Job = tuple[UnitSpec, UnitCheckpoint]


@dataclass
class OneUnit:
    """A work source with one unit; it records what became of it."""

    spec: UnitSpec
    start: UnitCheckpoint
    commits: list[Commit] = field(default_factory=list)
    final: UnitCheckpoint | None = None
    on_commit: Callable[[Commit], None] | None = None
    _given: bool = False

    async def next_unit(self) -> Job | None:
        if self._given:
            return None
        self._given = True
        return self.spec, self.start

    def running(self, unit_id: int, handle: UnitHandle) -> None:
        del unit_id, handle

    def committed(self, commit: Commit) -> None:
        self.commits.append(commit)
        if self.on_commit is not None:
            self.on_commit(commit)

    def finished(self, unit_id: int, checkpoint: UnitCheckpoint) -> None:
        self.final = checkpoint

    def returned(self, unit_id: int, checkpoint: UnitCheckpoint) -> None:
        self.finished(unit_id, checkpoint)


def unit_spec(
    run_dir: Path, input_path: Path, unit: UnitPlan, end: int, end_index: int, **options: Any
) -> UnitSpec:
    """The spec the coordinator would build, with the engine's defaults."""
    values: dict[str, Any] = {
        "format": "text", "output_kind": "jsonl", "batch_size": 1000, "retries": 0,
        "timeout": None, "commit_interval": 60.0, "fingerprint": "f" * 32, **options,
    }  # fmt: skip
    return UnitSpec(
        run_id=run_dir.name, run_dir=str(run_dir), unit_id=unit.unit_id, start=unit.start,
        end=end, first_index=unit.first_index, end_index=end_index,
        input_path=str(input_path), **values,
    )  # fmt: skip


def spec_from_manifest(run_dir: Path, manifest: Manifest, **options: Any) -> UnitSpec:
    """The spec of a one-unit run's unit, with the run's options."""
    (unit,) = manifest.units
    opts = manifest.options
    chosen = {"format": str(opts["format"]), "output_kind": str(opts["output_kind"]),
              "batch_size": int(opts["batch_size"]), **options}  # fmt: skip
    return unit_spec(run_dir, Path(manifest.input.path), unit, manifest.input.size,
                     manifest.total_items, fingerprint=manifest.input.fingerprint,
                     **chosen)  # fmt: skip


async def run_unit(
    work: OneUnit, fn: Fn | str, lanes: int,
    stores: Callable[[UnitSpec], UnitStore] = local_store,
) -> UnitCheckpoint:  # fmt: skip
    """Run the work source's unit to its end on this event loop; return its last checkpoint."""
    spec = work.spec
    shared = WorkerSetup(
        processor=str(fn), processor_args={}, format=spec.format, output_kind=spec.output_kind,
        retries=spec.retries, timeout=spec.timeout, fingerprint=spec.fingerprint, workers=1,
        concurrency=lanes, threads=lanes, loop="asyncio",
    )  # fmt: skip
    setup = RunSetup.made(shared, stores, Stopper(0.0), processor=load_processor(fn))
    await InProcess().run(work, setup)
    assert work.final is not None, "the unit never finished"
    return work.final


def fresh_unit(run_dir: Path, source: Path, batch_size: int, **options: Any) -> OneUnit:
    """The whole of ``source`` as one unit of a new run under ``run_dir``."""
    from asyncproc.engine.planning import plan

    planned = plan(source, 1)
    (unit,) = planned.units
    spec = unit_spec(run_dir, source, unit, planned.identity.size, planned.total_items,
                     batch_size=batch_size, **options)  # fmt: skip
    return OneUnit(spec, first_checkpoint(run_dir.name, unit))
