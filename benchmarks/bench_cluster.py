"""Beyond one machine: a Dask cluster against processes, and the cost of S3.

Scenarios (``--only`` picks some; all by default):

* ``cpu``: 120,000 items each burning ~50 us of CPU (``_cpu_burn.py``), one process
  against ``--processes 2`` against ``--engine dask`` on a 2-worker ``LocalCluster``
  (one thread each) started once by this script as ``--engine dask`` starts its own
  (``local_cluster_options``) and joined with ``--scheduler``, so the cluster's
  start-up (measured on its own) is not counted; each contender in a
  fresh process, alternating, medians of the ratios. Targets: dask >= 1.6x one
  process, and within 10% of ``--processes 2``.
* ``overhead``: the cost of one more unit on Dask: the same small input cut into 8 and
  into 64 units (``workers=``), ``(t64 - t8) / 56``.
* ``s3``: on moto's S3 server (its own process, on 127.0.0.1): one commit (a 1 KiB
  segment part and a checkpoint PUT) against the same on local disk; then the merge of
  a run whose committed output is 1,000 part objects.

Usage: ``python benchmarks/bench_cluster.py [--repeats 3] [--only cpu,overhead,s3]``.
Prints one JSON document on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _alternate import alternate, ratio

HERE = Path(__file__).resolve().parent
MARKER = "CLUSTER "
BURN = f"{HERE / '_cpu_burn.py'}:burn"
CPU_ITEMS = 120_000
S3_OPTIONS = {"key": "testing", "secret": "testing"}


def log(message: str) -> None:
    sys.stderr.write(f"[cluster] {message}\n")
    sys.stderr.flush()


def child(spec: dict[str, Any]) -> None:
    """One asyncproc job in this fresh process; prints its rate and elapsed time."""
    import asyncproc

    started = time.perf_counter()
    summary = asyncproc.run_file(spec["input"], spec["output"], spec["processor"],
                                 **spec["options"])  # fmt: skip
    elapsed = time.perf_counter() - started
    result = {"items_per_s": summary.processed / elapsed, "elapsed_s": elapsed,
              "units": summary.units}  # fmt: skip
    print(MARKER + json.dumps(result), flush=True)


def run_child(tmp: Path, inp: Path, processor: str, **options: Any) -> dict[str, Any]:
    spec = {
        "input": str(inp), "output": str(tmp / "out.jsonl"), "processor": processor,
        "options": {"new_run": True, "quiet": True, "checkpoint_dir": str(tmp / "ck"), **options},
    }  # fmt: skip
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len(MARKER) :])
    return result


def write_input(path: Path, count: int) -> Path:
    path.write_text("".join(f"item-{i}\n" for i in range(count)))
    return path


@contextlib.contextmanager
def local_cluster(workers: int) -> Iterator[tuple[str, float]]:
    """The LocalCluster ``--engine dask`` starts by itself; its address and start-up time."""
    import distributed

    from asyncproc.dask.executor import local_cluster_options

    started = time.perf_counter()
    cluster_type: Any = distributed.LocalCluster  # distributed has no type hints
    with cluster_type(**local_cluster_options(workers)) as cluster:
        yield cluster.scheduler_address, time.perf_counter() - started


def cpu_scenario(tmp: Path, repeats: int) -> dict[str, Any]:
    inp = write_input(tmp / "cpu.txt", CPU_ITEMS)
    common = {"concurrency": 64, "batch_size": 1000}
    with local_cluster(2) as (address, startup):
        log(f"LocalCluster of 2 workers started in {startup:.2f} s")
        rates = alternate({
            "dask 2 workers": lambda: run_child(tmp, inp, BURN, engine="dask",
                                                scheduler=address, **common)["items_per_s"],
            "processes 2": lambda: run_child(tmp, inp, BURN, processes=2, workers=4,
                                             **common)["items_per_s"],
            "one process": lambda: run_child(tmp, inp, BURN, workers=4,
                                             **common)["items_per_s"],
        }, repeats, log)  # fmt: skip
    return {
        "items": CPU_ITEMS,
        "cluster_startup_s": round(startup, 2),
        "medians_items_per_s": {k: round(statistics.median(v)) for k, v in rates.items()},
        "dask_vs_one_process": round(ratio(rates, "dask 2 workers", "one process"), 3),
        "dask_vs_processes_2": round(ratio(rates, "dask 2 workers", "processes 2"), 3),
        "processes_2_vs_one_process": round(ratio(rates, "processes 2", "one process"), 3),
    }


def overhead_scenario(tmp: Path, repeats: int) -> dict[str, Any]:
    inp = write_input(tmp / "small.txt", 64_000)
    elapsed: dict[int, list[float]] = {8: [], 64: []}
    with local_cluster(2) as (address, _):
        for repeat in range(repeats):
            for units in (8, 64):
                result = run_child(tmp, inp, "identity", engine="dask", scheduler=address,
                                   workers=units)  # fmt: skip
                assert result["units"] == units, result
                elapsed[units].append(result["elapsed_s"])
                log(f"repeat {repeat + 1}: {units} units: {result['elapsed_s']:.3f} s")
    per_unit = [(b - a) / 56 for a, b in zip(elapsed[8], elapsed[64], strict=True)]
    return {
        "median_elapsed_s": {str(k): round(statistics.median(v), 3) for k, v in elapsed.items()},
        "per_unit_ms": round(1000 * statistics.median(per_unit), 1),
    }


# -- S3 on moto --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def moto_process() -> Iterator[dict[str, Any]]:
    """moto's S3 server in a process of its own; the storage options that reach it."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    options = {"endpoint_url": f"http://127.0.0.1:{port}", **S3_OPTIONS}
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("moto's server did not start")
            time.sleep(0.1)
        yield options
    finally:
        server.terminate()
        server.wait(timeout=30)


def commit_times(storage: Any, commits: int) -> list[float]:
    from asyncproc.storage.records import SegmentRef, UnitCheckpoint
    from asyncproc.storage.unitstore import UnitStore

    store = UnitStore(storage, 0)
    store.open_segment("0000.001-bench.out")
    checkpoint = UnitCheckpoint(
        run_id="bench", unit_id=0, generation=0, offset=0, next_index=0, processed=0,
        failed=0, attempts=1, segments=(), dead_segments=(), updated_at=time.time(),
    )  # fmt: skip
    times, record = [], b'{"index": 0, "data": "' + b"x" * 1000 + b'"}\n'
    for k in range(commits):
        ref = SegmentRef("0000.001-bench.out", (k + 1) * len(record))
        checkpoint = checkpoint.advanced(ref, SegmentRef("0000.001-bench.dead", 0), 1, 0,
                                         offset=k + 1, next_index=k + 1)  # fmt: skip
        started = time.perf_counter()
        store.commit({"0000.001-bench.out": record}, checkpoint)
        times.append(time.perf_counter() - started)
    return times


def summary_ms(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"median_ms": round(1000 * statistics.median(ordered), 2),
            "p90_ms": round(1000 * ordered[int(0.9 * (len(ordered) - 1))], 2)}  # fmt: skip


def merge_time(options: dict[str, Any], parts: int) -> dict[str, Any]:
    """Write one unit's output as ``parts`` part objects (8 threads), then time the merge."""
    from asyncproc.engine.sources import merge_remote
    from asyncproc.storage.fsspecfs import FsspecStorage
    from asyncproc.storage.location import Location
    from asyncproc.storage.records import SegmentRef, UnitCheckpoint

    run = Location(f"s3://bench-merge/run-{os.getpid()}", options)
    run.fs.mkdir("bench-merge")
    storage = run.storage()
    assert isinstance(storage, FsspecStorage)
    segment = storage.open_segment("segments/0000.001-bench.out")
    record = b'{"index": 0, "data": "' + b"y" * 200 + b'"}\n'
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: storage.write_part(segment.name, k + 1, record), range(parts)))
    written = time.perf_counter() - started
    final = UnitCheckpoint(
        run_id="bench", unit_id=0, generation=1, offset=1, next_index=parts, processed=parts,
        failed=0, attempts=1, segments=(SegmentRef("0000.001-bench.out", parts * len(record)),),
        dead_segments=(), updated_at=time.time(),
    )  # fmt: skip
    started = time.perf_counter()
    merge_remote(storage, [final], run.child("out.jsonl"), as_array=False)
    merged = time.perf_counter() - started
    size = run.fs.info(run.child("out.jsonl").key)["size"]
    assert size == parts * len(record), size
    return {"parts": parts, "write_s_8_threads": round(written, 2), "merge_s": round(merged, 2)}


def s3_scenario(tmp: Path, repeats: int) -> dict[str, Any]:
    from asyncproc.storage.localfs import LocalStorage
    from asyncproc.storage.location import Location

    commits = 50 * repeats
    local = summary_ms(commit_times(LocalStorage(tmp / "local-run"), commits))
    with moto_process() as options:
        bucket = Location("s3://bench-commits", options)
        bucket.fs.mkdir("bench-commits")
        s3 = summary_ms(commit_times(bucket.child("run").storage(), commits))
        merge = merge_time(options, 1000)
    log(f"commit: local {local}, S3 {s3}; merge {merge}")
    return {"commits": commits, "commit_local": local, "commit_s3_moto": s3, "merge": merge}


SCENARIOS: dict[str, Callable[[Path, int], dict[str, Any]]] = {
    "cpu": cpu_scenario, "overhead": overhead_scenario, "s3": s3_scenario,
}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return 0
    results: dict[str, Any] = {"cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="asyncproc-cluster-") as tmp:
        for name in args.only.split(","):
            results[name] = SCENARIOS[name](Path(tmp), args.repeats)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
