"""The summary a run prints on stdout and returns from the Python API."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .._public import public
from ..storage.records import RunStatus, status_of


@public
@dataclass(frozen=True, slots=True)
class Summary:
    """What a finished run did; ``to_dict`` is the CLI's JSON, field for field."""

    run_id: str
    status: RunStatus  # a str enum: compares and serialises as its value ("completed")
    input: str
    output: str
    total_items: int
    processed: int
    failed: int
    failed_items_file: str | None
    checkpoint_cleared: bool
    resumed: bool
    workers: int  # units worked on at once, in this invocation
    concurrency: int  # lanes, over all processes

    elapsed_s: float
    items_per_s: float
    loop: str = "asyncio"  # the event loop that ran the last invocation
    processes: int = 1  # worker processes of this invocation
    units: int = 1  # units in the final plan (splits add units)
    concurrency_limit: int | None = None  # calls allowed at once at the end (auto: as adapted)
    rejected: int = 0  # calls the service rejected ("slow down") in this invocation
    checkpoint_dir: str = ""  # where the run lives (asyncproc list --checkpoint DIR)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Summary:
        """Read a stored summary; fields added later keep their defaults."""
        fields = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        if "status" in fields:
            fields["status"] = status_of(data, "the stored summary")
        return cls(**fields)
