"""What travels between the coordinator and a unit's Dask task: plain, msgpack-able data.

The coordinator submits :class:`TaskArgs` as a dict (its setup the same typed
:class:`~asyncproc.engine.wire.WorkerSetup` a ``--processes`` child gets); the task
logs one event per durable commit (:func:`commit_event`) on the run's topic and
returns its last checkpoint as text. Names on the cluster derive from the run id, so a restarted
coordinator uses the same ones: the unit's task key (:func:`task_key`), the topic of
its commits and the event that asks its tasks to stop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..engine.unit import Commit
from ..engine.units import UnitSpec
from ..engine.wire import WorkerSetup, decode_checkpoint, decode_spec, encode_commit
from ..storage.records import UnitCheckpoint


def task_key(spec: UnitSpec, start: UnitCheckpoint) -> str:
    """One key per unit and starting point: two clients asking for it share one task."""
    return f"asyncproc-{spec.run_id}-unit{spec.unit_id:04d}-at{start.offset}"


def topic(run_id: str) -> str:
    return f"asyncproc-commits-{run_id}"


def stop_event(run_id: str) -> str:
    return f"asyncproc-stop-{run_id}"


@dataclass(frozen=True, slots=True)
class TaskArgs:
    """Everything a unit's task needs besides the code: the unit, its start, the setup."""

    spec: dict[str, Any]
    start: str  # UnitCheckpoint as JSON text
    setup: WorkerSetup  # the processor as the workers can load it (an uploaded file by module)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskArgs:
        return cls(data["spec"], data["start"], WorkerSetup.from_dict(data["setup"]))

    @property
    def unit(self) -> UnitSpec:
        return decode_spec(self.spec)

    @property
    def checkpoint(self) -> UnitCheckpoint:
        return decode_checkpoint(self.start, "unit start")


def commit_event(commit: Commit, pid: int) -> dict[str, Any]:
    return {**encode_commit(commit), "pid": pid}
