"""A run's state on disk, read back: the plan, the line index, each unit's checkpoint.

Blocking; the coordinator runs it in a worker thread. Cost is O(units) records and one
read of the committed bytes, never a replay of items: each unit's newest good checkpoint
is read, its segments' sizes checked and their bytes checked against their CRCs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from .._errors import AsyncprocError, CheckpointError
from ..runs.rundir import RunDir
from ..storage.records import LineIndex, Manifest, UnitCheckpoint
from .units import Place, Plan, first_checkpoint, recut

log = logging.getLogger("asyncproc")


@dataclass(frozen=True, slots=True)
class RunState:
    """Everything the coordinator needs to go on with a run."""

    plan: Plan
    index: LineIndex
    states: dict[int, UnitCheckpoint]

    @property
    def pending(self) -> list[int]:
        return [u.unit_id for u in self.plan if not self.plan.is_done(self.states[u.unit_id])]

    @property
    def done(self) -> int:
        return sum(c.processed + c.failed for c in self.states.values())

    @property
    def failed(self) -> int:
        return sum(c.failed for c in self.states.values())


def load_state(
    run: RunDir, manifest: Manifest, rebuild_index: Callable[[], LineIndex] | None = None
) -> RunState:
    """Read the run's plan, index and unit checkpoints, saying what had to be skipped.

    ``rebuild_index`` indexes the input again, for an index that is not this run's.
    """
    plan = Plan(manifest.units, manifest.input.size, manifest.total_items)
    states = {u.unit_id: _load_unit(run, plan, u.unit_id) for u in plan}
    state = RunState(plan, _load_index(run, manifest, rebuild_index), states)
    _log_status(run.run_id, state)
    return state


def _load_unit(run: RunDir, plan: Plan, unit_id: int) -> UnitCheckpoint:
    unit = plan[unit_id]
    loaded = run.unit_store(unit_id).load(unit.start, plan.extent(unit_id).end)
    for problem in loaded.problems:
        log.warning("unit %d: %s", unit_id, problem)
    if loaded.checkpoint is None:
        if loaded.problems:
            log.warning("unit %d: no usable checkpoint; redoing it from its start", unit_id)
        return first_checkpoint(run.run_id, unit)
    if loaded.problems:
        log.warning(
            "unit %d: resuming from checkpoint generation %d (item %d)",
            unit_id, loaded.checkpoint.generation, loaded.checkpoint.next_index,
        )  # fmt: skip
    return loaded.checkpoint


def _load_index(
    run: RunDir, manifest: Manifest, rebuild: Callable[[], LineIndex] | None
) -> LineIndex:
    """The line index, if it is this run's; without a usable one no unit is split.

    An index is bound to its input by the input's fingerprint: one copied in from
    another input would cut items in the middle, so it is discarded and made again.
    """
    try:
        index = run.read_index()
    except (OSError, CheckpointError) as exc:
        log.warning("the line index of run %s cannot be used (%s); units will not be "
                    "split", run.run_id, exc)  # fmt: skip
        return NO_INDEX
    if _fits(index, manifest):
        return index
    why = "was made for another input" if index.fingerprint else "names no input (older asyncproc)"
    log.warning("the line index of run %s %s; indexing the input again", run.run_id, why)
    return _rebuilt(run, manifest, rebuild)


NO_INDEX = LineIndex((0,), (0,))


def _fits(index: LineIndex, manifest: Manifest) -> bool:
    """Whether ``index`` was made for this run's input (a schema-2 index cannot say)."""
    inside = index.offsets[-1] < max(manifest.input.size, 1)
    return (index.fingerprint == manifest.input.fingerprint and inside
            and index.indexes[-1] <= manifest.total_items)  # fmt: skip


def _rebuilt(run: RunDir, manifest: Manifest, rebuild: Callable[[], LineIndex] | None) -> LineIndex:
    try:
        index = rebuild() if rebuild is not None else None
    except (OSError, AsyncprocError) as exc:
        log.warning("the input of run %s cannot be indexed again (%s); units will not be "
                    "split", run.run_id, exc)  # fmt: skip
        return NO_INDEX
    if index is None or not _fits(index, manifest):
        return NO_INDEX
    run.write_index(index)
    return index


def _log_status(run_id: str, state: RunState) -> None:
    if not state.done and not any(c.attempts for c in state.states.values()):
        return
    log.info(
        "resuming run %s: %d/%d items done (%d failed), %d of %d unit(s) left",
        run_id, state.done, state.plan.total_items, state.failed, len(state.pending),
        len(state.plan),
    )  # fmt: skip


def recut_state(state: RunState, wanted: int) -> RunState:
    """Cut the remaining ranges so that ``wanted`` units have work, where they can be cut."""
    resume_at = {
        u: Place(state.states[u].offset, state.states[u].next_index) for u in state.pending
    }
    plan = recut(state.plan, state.index, resume_at, wanted)
    if plan is state.plan:
        return state
    states = dict(state.states)
    for unit in plan:
        states.setdefault(unit.unit_id, first_checkpoint(next(iter(states.values())).run_id, unit))
    return RunState(plan, state.index, states)
