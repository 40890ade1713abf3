"""One typed wire for every worker that runs units away from the coordinator.

A run's :class:`~asyncproc.engine.executor.RunSetup` holds a :class:`WorkerSetup`:
plain, JSON- and msgpack-able data. ``--processes`` children and Dask tasks are sent
it (at their share of the run) and rebuild their ``RunSetup`` from it; their commits
travel back as :func:`encode_commit` dicts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Self

from ..limits.gate import Gate, LimitConfig
from ..storage.records import UnitCheckpoint
from .unit import Commit
from .units import Place, UnitSpec


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """What every unit of a run shares, as data: the whole run's in the coordinator,
    a worker's share of it (slots, lanes, threads, budgets) in a worker."""

    processor: str  # the spec as the worker can load it
    processor_args: dict[str, str]
    format: str
    output_kind: str
    retries: int
    timeout: float | None
    fingerprint: str
    workers: int  # units worked on at once
    concurrency: int  # lanes
    threads: int  # worker threads for a sync processor
    loop: str  # the event loop the coordinator runs on: the worker runs the same
    grace: float = 0.0
    limits: dict[str, Any] | None = None  # a worker's share of the budgets (None: none)
    headers: dict[str, str] | None = None  # the http processor's; a private pipe, never disk
    stall_after: float = 0.0  # warn when one item holds a unit this long (0: never)
    input_path: str = ""  # the input, to show the line of a stalled item
    faults: str = ""  # the fault points armed in the coordinator (tests only)
    # A careful child's (processes/poison.py): it reruns what a dead worker had in flight.
    careful: bool = False
    budget: int = 0  # items it may take
    condemned: list[list[Any]] = field(default_factory=list)  # [offset, reason] pairs
    suspects: list[int] = field(default_factory=list)  # offsets it calls one at a time

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def gate(self) -> Gate | None:
        return None if self.limits is None else Gate(LimitConfig.from_dict(self.limits))


def encode_spec(spec: UnitSpec) -> dict[str, Any]:
    return asdict(spec)


def decode_spec(data: dict[str, Any]) -> UnitSpec:
    return UnitSpec(**data)


def encode_checkpoint(checkpoint: UnitCheckpoint) -> str:
    return checkpoint.to_bytes().decode()


def decode_checkpoint(text: str, what: str) -> UnitCheckpoint:
    return UnitCheckpoint.from_bytes(text.encode(), what)


def encode_place(place: Place | None) -> list[int] | None:
    return None if place is None else [place.offset, place.index]


def decode_place(data: list[int] | None) -> Place | None:
    return None if data is None else Place(int(data[0]), int(data[1]))


def encode_commit(commit: Commit) -> dict[str, Any]:
    """One durable commit of a worker, as its coordinator learns of it."""
    return {
        "unit_id": commit.unit_id, "processed": commit.processed, "failed": commit.failed,
        "checkpoint": encode_checkpoint(commit.checkpoint),
        "claimed": encode_place(commit.claimed), "last_error": commit.last_error,
    }  # fmt: skip


def decode_commit(data: dict[str, Any], what: str) -> Commit:
    claimed = decode_place(data["claimed"])
    error = data.get("last_error")
    return Commit(
        int(data["unit_id"]), int(data["processed"]), int(data["failed"]),
        decode_checkpoint(data["checkpoint"], what),
        claimed if claimed is not None else Place(0, 0),
        str(error) if error is not None else None,
    )  # fmt: skip
