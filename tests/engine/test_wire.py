"""One typed wire for every worker: ``--processes`` children and Dask tasks alike."""

from __future__ import annotations

from pathlib import Path

import orjson

import asyncproc.dask.wire as dask_wire
import asyncproc.processes.wire as processes_wire
from asyncproc.engine.unit import Commit
from asyncproc.engine.units import Place
from asyncproc.engine.wire import WorkerSetup, decode_commit
from asyncproc.storage.records import UnitCheckpoint

ROOT = Path(__file__).resolve().parents[2]
SETUP = WorkerSetup(
    processor="identity", processor_args={"k": "v"}, format="text", output_kind="jsonl",
    retries=2, timeout=1.5, fingerprint="f", workers=2, concurrency=8, threads=8,
    loop="asyncio", grace=3.0, limits={"rate": 2.0}, headers={"A": "b"}, stall_after=30.0,
    input_path="in.txt", faults="segment_write:2",
)  # fmt: skip
CHECKPOINT = UnitCheckpoint("r", 1, 4, 100, 10, 9, 1, 1, (), (), 2.5)


def test_a_setup_round_trips_as_plain_data() -> None:
    assert WorkerSetup.from_dict(orjson.loads(orjson.dumps(SETUP.to_dict()))) == SETUP


def test_a_commit_round_trips_for_both_workers() -> None:
    commit = Commit(1, 9, 1, CHECKPOINT, Place(100, 10), "boom")
    child = orjson.loads(processes_wire.line(processes_wire.commit_message(commit)))["commit"]
    task = dask_wire.commit_event(commit, pid=7)
    assert decode_commit(child, "child") == commit == decode_commit(task, "task")


def test_the_worker_wires_keep_no_encoders_of_their_own() -> None:
    for module in (processes_wire, dask_wire):
        own = {n for n in vars(module) if n.startswith(("encode_", "decode_"))}
        assert all(getattr(module, n).__module__ == "asyncproc.engine.wire" for n in own), own


def test_run_setup_is_built_in_one_place() -> None:
    """Every RunSetup comes from RunSetup.made, in a worker or the coordinator."""
    folders = ("asyncproc", "tests", "benchmarks")
    sources = [p for f in folders for p in sorted((ROOT / f).rglob("*.py"))]
    sources = [p for p in sources if p.name != "test_wire.py"]
    built = [p.relative_to(ROOT).as_posix() for p in sources if "RunSetup(" in p.read_text()]
    assert built == []
