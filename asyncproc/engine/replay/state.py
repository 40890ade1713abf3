"""The durable state of a ``--retry-failed``: a plan record and one unit's commit protocol.

A retry keeps its state in the run directory's ``retry/`` folder, through a
:class:`Subfolder` view of the run's own storage: the same :class:`UnitStore`, the same
names and the same walk from the run's root that never follows a symlink, so no second
storage root has to be trusted. The retry is unit 0 of that folder; its "input" is the
failed-items file, so a checkpoint's ``offset`` is a byte offset in that file and
``next_index`` counts the dead letters retried::

    retry/retry.json                      RetryPlan: which failed-items file, since when
    retry/units/0000.a.ckpt, .b.ckpt      UnitCheckpoint: offset in the failed-items file
    retry/segments/0000.<attempt>.out     successes, encoded as a clean run encodes them
    retry/segments/0000.<attempt>.dead    items still failing, with their new errors

Blocking functions; the retry calls them from a worker thread.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Self

from ..._errors import CheckpointError, CorruptCheckpointError
from ...runs.rundir import RunDir
from ...storage.faults import crashpoint
from ...storage.location import Location
from ...storage.protocol import Storage
from ...storage.records import (
    SCHEMA_VERSION,
    InputIdentity,
    Manifest,
    Sealed,
    UnitCheckpoint,
    UnitPlan,
    field_of,
    time_of,
)
from ...storage.subfolder import Subfolder
from ...storage.unitstore import UnitStore, VolatileUnitStore
from ..planning import difference, identify
from ..sources import identify_object
from ..units import first_checkpoint

log = logging.getLogger("asyncproc")

FOLDER = "retry/"
PLAN = "retry.json"
UNIT = UnitPlan(unit_id=0, start=0, first_index=0)  # the retry's one unit: the whole file


@dataclass(frozen=True, slots=True)
class RetryPlan(Sealed):
    """What a retry works through; written once, before its first commit."""

    run_id: str
    failed: InputIdentity  # the failed-items file (or object: its URL) as the retry found it
    items: int  # dead letters in it
    manifest_at: float  # the manifest's updated_at then: a later one means "recorded"
    created_at: float
    schema: int = field(default=SCHEMA_VERSION)

    @classmethod
    def decode(cls, data: dict[str, Any], what: str) -> Self:
        return cls(
            run_id=field_of(data, "run_id", str, what),
            failed=InputIdentity.from_dict(field_of(data, "failed", dict, what), what),
            items=field_of(data, "items", int, what),
            manifest_at=time_of(data, "manifest_at", what),
            created_at=time_of(data, "created_at", what),
        )


@dataclass(frozen=True, slots=True)
class RetryState:
    """A retry to go on with: its plan and its last durable checkpoint."""

    plan: RetryPlan
    checkpoint: UnitCheckpoint

    @property
    def done(self) -> bool:
        """Every dead letter of the plan is committed: only the publication is left."""
        return self.checkpoint.offset >= self.plan.failed.size


def retry_storage(run: RunDir) -> Storage:
    return Subfolder(run.storage, FOLDER)


def retry_store(run: RunDir, durable: bool) -> UnitStore:
    """The retry's commit protocol; ``--no-checkpoint`` writes no checkpoint, as for units."""
    return (UnitStore if durable else VolatileUnitStore)(retry_storage(run), UNIT.unit_id)


def clear(run: RunDir) -> None:
    """Remove the retry's state in one durable step; nothing there is needed any more."""
    run.storage.remove_tree(FOLDER)


def leftover(run: RunDir, manifest: Manifest, failed: Location) -> RetryState | None:
    """The retry a crash cut short, if there is one that can go on; stale state is cleared.

    A retry whose summary is already in the manifest only missed clearing its state; a
    retry whose failed-items file changed under it cannot go on (its offsets mean
    nothing now): both are cleared, the second loudly.
    """
    plan = _read_plan(run)
    if plan is None:
        if run.storage.list(FOLDER):
            log.warning("run %s: retry state without a usable plan; discarding it", run.run_id)
            clear(run)
        return None
    if plan.manifest_at != manifest.updated_at:
        log.info("run %s: clearing the state of its last retry, which finished", run.run_id)
        clear(run)
        return None
    state = RetryState(plan, _load_checkpoint(run, plan))
    why = None if state.done else _unusable(plan, failed)
    if why is not None:
        log.warning("run %s: the interrupted retry cannot go on (%s); starting it over",
                    run.run_id, why)  # fmt: skip
        clear(run)
        return None
    return state


def _read_plan(run: RunDir) -> RetryPlan | None:
    """The retry's plan; None if there is none or it is damaged (that is said)."""
    what = f"retry plan of run {run.run_id}"
    try:
        raw = retry_storage(run).get(PLAN)
    except OSError as exc:  # not damage: never a reason to discard the retry
        raise CheckpointError(f"{what} cannot be read: {exc.strerror}") from exc
    try:
        plan = None if raw is None else RetryPlan.from_bytes(raw, what)
    except CorruptCheckpointError as exc:
        log.warning("%s", exc)
        return None
    if plan is not None and plan.run_id != run.run_id:
        log.warning("%s belongs to run %s", what, plan.run_id)
        return None
    return plan


def _unusable(plan: RetryPlan, failed: Location) -> str | None:
    """Why the plan's failed-items file is not the one there now, or None."""
    if plan.failed.path != failed.url:
        return f"it was retrying {plan.failed.path}, not {failed}"
    now = identify_failed(failed)
    if now is None:
        return f"{failed} is gone"
    return difference(plan.failed, now)


def identify_failed(failed: Location) -> InputIdentity | None:
    """The failed-items file's path or URL, size, version and fingerprint; None if missing.

    Identified as an input is, so that a retry never goes on over a rewritten file.
    """
    if failed.is_local:
        return identify(failed.path) if failed.path.is_file() else None
    try:
        info = failed.info()
    except FileNotFoundError:
        return None
    return identify_object(failed, info) if info["type"] == "file" else None


def _load_checkpoint(run: RunDir, plan: RetryPlan) -> UnitCheckpoint:
    loaded = retry_store(run, durable=True).load(0, plan.failed.size)
    for problem in loaded.problems:
        log.warning("run %s, retry: %s", run.run_id, problem)
    if loaded.checkpoint is not None:
        return loaded.checkpoint
    if loaded.problems:
        log.warning("run %s: the retry has no usable checkpoint; redoing it", run.run_id)
    return first_checkpoint(run.run_id, UNIT)


def start(run: RunDir, manifest: Manifest, failed: Location) -> RetryState:
    """Plan a new retry of ``failed`` and make the plan durable before any commit."""
    identity = identify_failed(failed)
    if identity is None:
        raise CheckpointError(
            f"cannot read failed items {failed}: it is missing; run {run.run_id} has nothing "
            "to retry without it"
        )
    plan = RetryPlan(
        run_id=run.run_id, failed=identity, items=_count_letters(failed, identity.size),
        manifest_at=manifest.updated_at, created_at=time.time(),
    )  # fmt: skip
    clear(run)  # an older retry's unusable remains, if any
    if not retry_storage(run).create(PLAN, plan.to_bytes()):
        raise CheckpointError(f"run {run.run_id}: another retry planned itself meanwhile")
    crashpoint("retry_planned")
    return RetryState(plan, first_checkpoint(run.run_id, UNIT))


def _count_letters(failed: Location, size: int) -> int:
    """Non-blank lines of the failed-items file: one streaming pass, for progress only."""
    count = 0
    with failed.open_read(size) as fh:
        for line in fh:
            count += bool(line.strip())
    return count
