"""Run ONE measured job in this (fresh) process and print its timing as JSON.

Started by ``bench_core.py`` as ``python benchmarks/_runner.py ENGINE ...``.  The
engine is imported first; only the job itself is timed (``time.perf_counter``).
The last stdout line is ``BENCH_RESULT {json}`` with ``elapsed_s``, ``items``,
``maxrss_kb`` (``getrusage(RUSAGE_SELF).ru_maxrss``, KiB on Linux) and details.

ENGINE is ``asyncproc`` (``asyncproc.run_file`` with a fresh checkpoint dir,
``new_run=True``, ``quiet=True``, ``format="text"``) or ``bare``
(``bare_asyncio.run``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MARKER = "BENCH_RESULT "


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("engine", choices=("asyncproc", "bare"))
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--processor", required=True, help="engine-specific processor name")
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--latency", type=float, default=None, help="sleep seconds, if any")
    p.add_argument("--checkpoint", default=None, help="asyncproc: fresh checkpoint dir")
    p.add_argument("--workers", type=int, default=None, help="asyncproc: --workers")
    p.add_argument(
        "--bare-uvloop", action="store_true", help="both engines on uvloop (default: asyncio)"
    )
    return p.parse_args(argv)


def _asyncproc_job(args: argparse.Namespace) -> Callable[[], dict[str, Any]]:
    import asyncproc

    options: dict[str, Any] = {
        "checkpoint_dir": args.checkpoint,
        "concurrency": args.concurrency,
        "format": "text",
        "new_run": True,
        "quiet": True,
    }
    if args.latency is not None:
        options["processor_args"] = {"latency": str(args.latency)}
    if args.workers is not None:
        options["workers"] = args.workers
    # The same event loop as the bare program, so the ratio compares engines, not loops.
    loop = "uvloop" if args.bare_uvloop else "asyncio"

    def job() -> dict[str, Any]:
        s = asyncproc.run_file(args.input, args.output, args.processor, loop=loop, **options)
        return {
            "items": s.processed,
            "total_items": s.total_items,
            "failed": s.failed,
            "workers": s.workers,
            "status": s.status,
            "summary_items_per_s": s.items_per_s,
        }

    return job


def _bare_job(args: argparse.Namespace) -> Callable[[], dict[str, Any]]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bare_asyncio

    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if args.bare_uvloop:
        import uvloop

        loop_factory = uvloop.new_event_loop
    latency = args.latency if args.latency is not None else 0.0

    def job() -> dict[str, Any]:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            n = runner.run(
                bare_asyncio.run(args.input, args.output, args.processor, args.concurrency, latency)
            )
        return {"items": n, "total_items": n, "failed": 0}

    return job


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    job = _asyncproc_job(args) if args.engine == "asyncproc" else _bare_job(args)
    gc.collect()
    t0 = time.perf_counter()
    info = job()
    elapsed = time.perf_counter() - t0
    info.update(
        engine=args.engine,
        elapsed_s=elapsed,
        items_per_s=info["items"] / elapsed if elapsed > 0 else 0.0,
        maxrss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        children_maxrss_kb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        uvloop_loaded="uvloop" in sys.modules,
    )
    sys.stdout.flush()
    print(MARKER + json.dumps(info), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
