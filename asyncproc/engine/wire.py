"""One typed wire for every worker that runs units away from the coordinator.

``--processes`` children and Dask tasks both get a :class:`WorkerSetup` (plain,
JSON- and msgpack-able data) and build their :class:`RunSetup` from it in one place
(:meth:`WorkerSetup.run_setup`); their commits travel as :func:`encode_commit` dicts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, Self

from ..limits.gate import Gate, LimitConfig
from ..processors.loading import Processor, load_processor
from ..storage import faults
from ..storage.records import UnitCheckpoint
from ..storage.unitstore import UnitStore
from .executor import RunSetup
from .loops import running_loop
from .stopping import Stopper
from .unit import Commit
from .units import Place, UnitSpec


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """What a worker needs besides its units: the run's setup, at its share of the run."""

    processor: str  # the spec as the worker can load it
    processor_args: dict[str, str]
    format: str
    output_kind: str
    retries: int
    timeout: float | None
    fingerprint: str
    workers: int  # unit slots in this worker
    concurrency: int  # lanes in this worker
    threads: int  # threads for a sync processor in this worker
    loop: str  # the event loop the coordinator runs on: the worker runs the same
    grace: float = 0.0
    limits: dict[str, Any] | None = None  # this worker's share of the budgets (None: none)
    headers: dict[str, str] | None = None  # only on a private pipe, never on disk
    stall_after: float = 0.0
    input_path: str = ""
    faults: str = ""  # the fault points armed in the coordinator (tests only)

    @classmethod
    def of(
        cls, setup: RunSetup, *, workers: int, concurrency: int, threads: int,
        processor: str | None = None,
    ) -> Self:  # fmt: skip
        """The shared part of ``setup``, with this worker's shares of slots, lanes, threads."""
        return cls(
            processor=processor or setup.processor.spec, processor_args=setup.processor_args,
            format=setup.format, output_kind=setup.output_kind, retries=setup.retries,
            timeout=setup.timeout, fingerprint=setup.fingerprint, workers=workers,
            concurrency=concurrency, threads=threads, loop=running_loop(),
            grace=setup.stopper.grace, faults=faults.armed_spec(),
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def gate(self) -> Gate | None:
        return None if self.limits is None else Gate(LimitConfig.from_dict(self.limits))

    def run_setup(
        self, stores: Callable[[UnitSpec], UnitStore], stopper: Stopper,
        gate: Gate | None = None, processor: Processor | None = None,
    ) -> RunSetup:  # fmt: skip
        """The one place a :class:`RunSetup` is made: in a worker (its processor loaded
        here, from the spec) or in the coordinator (``processor`` already loaded)."""
        if processor is None:
            processor = load_processor(self.processor, self.processor_args, self.headers)
        return RunSetup(
            processor=processor,
            processor_args=self.processor_args, format=self.format,
            output_kind=self.output_kind, retries=self.retries, timeout=self.timeout,
            fingerprint=self.fingerprint, stores=stores, stopper=stopper,
            workers=self.workers, concurrency=self.concurrency, threads=self.threads,
            gate=gate, headers=self.headers, stall_after=self.stall_after,
            input_path=self.input_path,
        )  # fmt: skip


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
