"""What travels between the coordinator and a unit's Dask task: plain, msgpack-able data.

The coordinator submits :class:`TaskArgs` as a dict; the task logs one event per
durable commit (:func:`commit_event`) on the run's topic and returns its last
checkpoint as text. Names on the cluster derive from the run id, so a restarted
coordinator uses the same ones: the unit's task key (:func:`task_key`), the topic of
its commits and the event that asks its tasks to stop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..engine.unit import Commit
from ..engine.units import Place, UnitSpec
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
    processor: str  # the spec as the workers can load it (an uploaded file by module)
    processor_args: dict[str, str]
    loop: str
    lanes: int
    threads: int
    grace: float
    storage_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def unit(self) -> UnitSpec:
        return UnitSpec(**self.spec)

    @property
    def checkpoint(self) -> UnitCheckpoint:
        return decode_checkpoint(self.start, "unit start")


def encode_checkpoint(checkpoint: UnitCheckpoint) -> str:
    return checkpoint.to_bytes().decode()


def decode_checkpoint(text: str, what: str) -> UnitCheckpoint:
    return UnitCheckpoint.from_bytes(text.encode(), what)


def commit_event(commit: Commit, pid: int) -> dict[str, Any]:
    return {
        "unit_id": commit.unit_id, "processed": commit.processed, "failed": commit.failed,
        "checkpoint": encode_checkpoint(commit.checkpoint),
        "claimed": [commit.claimed.offset, commit.claimed.index],
        "last_error": commit.last_error, "pid": pid,
    }  # fmt: skip


def decode_commit(data: dict[str, Any]) -> Commit:
    offset, index = data["claimed"]
    error = data.get("last_error")
    return Commit(
        int(data["unit_id"]), int(data["processed"]), int(data["failed"]),
        decode_checkpoint(data["checkpoint"], "Dask commit"), Place(int(offset), int(index)),
        str(error) if error is not None else None,
    )  # fmt: skip
