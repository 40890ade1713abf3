"""Run ONE timed job of ``bench_v2.py`` in this (fresh) process; print its timing.

``python benchmarks/_v2_child.py SPEC_JSON``. The engine is imported first and only
the job is timed (``time.perf_counter``), as in ``_runner.py``. SPEC's ``engine``:

* ``asyncproc``: ``asyncproc.run_file(input, output, processor, loop=..., **options)``
  with ``checkpoint_dir``, ``new_run=True``, ``quiet=True``, ``format="text"``;
* ``bare_skew``: ``bare_asyncio.run_pool`` (``concurrency`` worker tasks on a queue)
  with ``_skew.work``, the processor asyncproc is given;
* ``threads``: ``ThreadPoolExecutor(threads).map(_sync_work.work, items)``, each result
  written in input order as ``{"index": i, **result}`` (orjson, ``OPT_APPEND_NEWLINE``),
  the bytes of asyncproc's ``.jsonl`` output.

The last stdout line is ``BENCH_RESULT {json}``: ``elapsed_s``, ``items``,
``maxrss_kb`` and, for asyncproc, the run's ``summary``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import resource
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

MARKER = "BENCH_RESULT "
Job = Callable[[], dict[str, Any]]


def asyncproc_job(spec: dict[str, Any]) -> Job:
    import asyncproc

    options = {"new_run": True, "quiet": True, "format": "text", **spec["options"]}

    def job() -> dict[str, Any]:
        s = asyncproc.run_file(
            spec["input"], spec["output"], spec["processor"], loop=spec["loop"], **options
        )
        return {"items": s.processed, "failed": s.failed, "summary": s.to_dict()}

    return job


def bare_skew_job(spec: dict[str, Any]) -> Job:
    import _skew
    import bare_asyncio

    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if spec["loop"] == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop

    def job() -> dict[str, Any]:
        pool = bare_asyncio.run_pool(spec["input"], spec["output"], _skew.work, spec["concurrency"])
        with asyncio.Runner(loop_factory=factory) as runner:
            n = runner.run(pool)
        return {"items": n, "failed": 0}

    return job


def run_threads(input_path: str, output_path: str, threads: int) -> int:
    """Map the sync processor over the items on a thread pool; write results in order."""
    import _sync_work
    import bare_asyncio

    count = 0
    with ThreadPoolExecutor(threads) as pool, open(output_path, "wb") as out:
        results = pool.map(_sync_work.work, bare_asyncio.iter_items(input_path))
        for count, result in enumerate(results, start=1):
            out.write(
                orjson.dumps({"index": count - 1, **result}, option=orjson.OPT_APPEND_NEWLINE)
            )
    return count


def threads_job(spec: dict[str, Any]) -> Job:
    import _sync_work  # noqa: F401 - imported before the clock starts
    import bare_asyncio  # noqa: F401

    def job() -> dict[str, Any]:
        return {"items": run_threads(spec["input"], spec["output"], spec["threads"]), "failed": 0}

    return job


JOBS: dict[str, Callable[[dict[str, Any]], Job]] = {
    "asyncproc": asyncproc_job,
    "bare_skew": bare_skew_job,
    "threads": threads_job,
}


def main(argv: list[str]) -> int:
    spec: dict[str, Any] = json.loads(argv[0])
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    job = JOBS[spec["engine"]](spec)
    gc.collect()
    t0 = time.perf_counter()
    info = job()
    elapsed = time.perf_counter() - t0
    info.update(
        elapsed_s=elapsed,
        items_per_s=info["items"] / elapsed if elapsed > 0 else 0.0,
        maxrss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    )
    print(MARKER + json.dumps(info), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
