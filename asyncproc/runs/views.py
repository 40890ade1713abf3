"""What management shows of a run: frozen views with the stable JSON field names.

Pure data, shared by file runs (:mod:`._manage`) and keyed runs (:mod:`._keyed_view`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._public import public
from ..storage.records import RunStatus

FINISHED = (RunStatus.COMPLETED, RunStatus.MERGED)


def iso(ts: float | None) -> str | None:
    """A POSIX time as an ISO 8601 string in UTC, or None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


@public
@dataclass(frozen=True, slots=True)
class UnitView:
    """One work unit's progress as its newest good checkpoint records it.

    In JSON a unit keeps the field names of engine v1's shards (``shard_id`` in a
    ``shards`` list), which scripts rely on.
    """

    unit_id: int
    start: int
    end: int
    items: int
    processed: int
    failed: int
    attempts: int
    done: bool
    checkpoint_at: float | None
    problems: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "shard_id": self.unit_id, "start": self.start, "end": self.end,
            "items": self.items, "processed": self.processed, "failed": self.failed,
            "attempts": self.attempts, "done": self.done,
            "checkpoint_at": iso(self.checkpoint_at), "problems": list(self.problems),
        }  # fmt: skip


@public
@dataclass(frozen=True, slots=True)
class RunView:
    """A run as management commands show it; ``to_json`` has the stable field names."""

    run_id: str
    status: RunStatus
    input: str
    output: str
    total_items: int
    processed: int
    failed: int
    started_at: float
    ended_at: float | None
    updated_at: float
    options: dict[str, Any]
    holder: str | None
    path: Path
    units: tuple[UnitView, ...] = ()
    summary: dict[str, Any] | None = None
    kind: str = "file"  # "file" for a file run, "keyed" for a CheckpointManager run
    live: dict[str, Any] | None = None  # limits.json of a running run (runs/live.py)
    description: str | None = None  # what a keyed run is for, as given when it started
    resumed_at: float | None = None  # when the latest invocation began (file runs)
    done_at_resume: int = 0  # items done then
    now: float = field(default_factory=time.time)

    @property
    def done(self) -> int:
        return self.processed + self.failed

    @property
    def percent(self) -> float:
        return round(100.0 * self.done / self.total_items, 1) if self.total_items else 100.0

    @property
    def duration(self) -> float:
        end = self.ended_at or (self.now if self.status is RunStatus.RUNNING else self.updated_at)
        return max(0.0, end - self.started_at)

    @property
    def checkpoint_dir(self) -> Path:
        return self.path.parent

    @property
    def throughput(self) -> float:
        """Items per second while running: over the latest invocation, so the time the
        run stood stopped between invocations does not count (for runs that say when it
        began; else since the run was planned)."""
        if self.summary and "items_per_s" in self.summary:
            return float(self.summary["items_per_s"])
        if self.resumed_at is not None:
            end = self.now if self.status is RunStatus.RUNNING else self.updated_at
            running = end - self.resumed_at
            return (self.done - self.done_at_resume) / running if running > 0 else 0.0
        return self.done / self.duration if self.duration > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the average rate, for an unfinished run; None if unknown."""
        if self.status in FINISHED or self.throughput <= 0:
            return None
        return (self.total_items - self.done) / self.throughput

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "status": self.status.value, "input": self.input,
            "output": self.output, "total_items": self.total_items,
            "processed": self.processed, "failed": self.failed, "percent": self.percent,
            "started_at": iso(self.started_at), "ended_at": iso(self.ended_at),
            "updated_at": iso(self.updated_at), "duration_s": round(self.duration, 3),
            "holder": self.holder, "kind": self.kind, "description": self.description,
            "checkpoint_dir": str(self.checkpoint_dir),
        }  # fmt: skip

    @property
    def concurrency_limit(self) -> int | None:
        """Calls allowed at once: live while running with limits, else as it ended."""
        source = self.live if self.status is RunStatus.RUNNING else self.summary
        value = (source or {}).get("concurrency_limit")
        return int(value) if isinstance(value, int) else None

    def to_json_detail(self, failures: list[dict[str, Any]]) -> dict[str, Any]:
        eta = self.eta
        return {
            **self.to_json(), "options": self.options,
            "concurrency_limit": self.concurrency_limit,
            "items_per_s": round(self.throughput, 1),
            "eta_s": None if eta is None else round(eta, 1),
            "shards": [u.to_json() for u in self.units], "recent_failures": failures,
        }  # fmt: skip


def damaged_view(path: Path, kind: str, why: str, holder: str | None) -> RunView:
    """A run whose record cannot be read: listed as damaged, so it can be deleted."""
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = 0.0
    return RunView(
        run_id=path.name, status=RunStatus.DAMAGED, input="?", output="", total_items=0,
        processed=0, failed=0, started_at=mtime, ended_at=None, updated_at=mtime,
        options={"error": why}, holder=holder, path=path, kind=kind,
    )  # fmt: skip


def derive_status(stored: RunStatus, held: bool) -> RunStatus:
    """The status to show: a held lock means running; 'running' with no holder died."""
    if stored in FINISHED:
        return stored
    if held:
        return RunStatus.RUNNING
    return RunStatus.INTERRUPTED if stored is RunStatus.RUNNING else stored
