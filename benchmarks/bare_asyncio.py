"""The hand-written baseline: a minimal asyncio program, no asyncproc.

It does the same job as ``asyncproc run --format text --output X.jsonl`` minus
checkpoints, retries and crash safety:

* items are the input's non-blank lines (``bytes.strip()`` non-empty), each item
  being the stripped line decoded as UTF-8, numbered 0, 1, 2, ... in input order;
* a fixed pool of ``concurrency`` worker tasks takes ``(index, item)`` pairs from a
  bounded :class:`asyncio.Queue` and awaits the processor on each;
* results are kept by index and written in input order, one orjson line each:
  ``{"index": i, "result": item}``.

Processors: ``noop`` (``async def f(x): return x``) and ``sleep``
(``await asyncio.sleep(latency)``, then return ``x``).  With them the output is
byte-identical to asyncproc's ``.jsonl`` output with its ``identity`` and
``sleep`` processors (``bench_core.py`` checks this once per scenario).

Usage::

    python benchmarks/bare_asyncio.py --input in.txt --output out.jsonl \
        --processor sleep --concurrency 1000 --latency 0.01 [--uvloop]

prints one JSON object: ``{"items": N, "elapsed_s": S, "items_per_s": R}``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import orjson

Processor = Callable[[str], Awaitable[str]]
Job = tuple[int, str] | None

PROCESSORS = ("noop", "sleep")


def make_processor(name: str, latency: float) -> Processor:
    """Return the async processor called ``name``."""
    if name == "noop":

        async def noop(x: str) -> str:
            return x

        return noop
    if name == "sleep":

        async def sleep(x: str) -> str:
            await asyncio.sleep(latency)
            return x

        return sleep
    raise ValueError(f"unknown processor {name!r}; expected one of {PROCESSORS}")


def iter_items(input_path: str | Path) -> Iterator[str]:
    """Yield the stripped, decoded non-blank lines of ``input_path`` in order."""
    with open(input_path, "rb") as f:
        for line in f:
            stripped = line.strip()
            if stripped:
                yield stripped.decode("utf-8")


class OrderedWriter:
    """Keeps out-of-order results by index and writes them in index order."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._pending: dict[int, str] = {}
        self._next = 0

    def put(self, index: int, result: str) -> None:
        pending = self._pending
        pending[index] = result
        nxt = self._next
        write = self._out.write
        while nxt in pending:
            record = {"index": nxt, "result": pending.pop(nxt)}
            write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
            nxt += 1
        self._next = nxt

    @property
    def written(self) -> int:
        return self._next


async def _produce(input_path: str | Path, queue: asyncio.Queue[Job], n_workers: int) -> int:
    count = 0
    for item in iter_items(input_path):
        await queue.put((count, item))
        count += 1
    for _ in range(n_workers):
        await queue.put(None)
    return count


async def _work(queue: asyncio.Queue[Job], proc: Processor, writer: OrderedWriter) -> None:
    while True:
        job = await queue.get()
        if job is None:
            return
        index, item = job
        writer.put(index, await proc(item))


async def run(
    input_path: str | Path,
    output_path: str | Path,
    processor: str,
    concurrency: int,
    latency: float,
) -> int:
    """Process ``input_path`` into ``output_path``; return the number of items."""
    return await run_pool(input_path, output_path, make_processor(processor, latency), concurrency)


async def run_pool(
    input_path: str | Path, output_path: str | Path, proc: Processor, concurrency: int
) -> int:
    """The pool itself, for any async processor (``bench_v2.py`` passes its own)."""
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=concurrency)
    with open(output_path, "wb") as out:  # noqa: ASYNC230 - deliberately minimal baseline
        writer = OrderedWriter(out)
        async with asyncio.TaskGroup() as tg:
            for _ in range(concurrency):
                tg.create_task(_work(queue, proc, writer))
            produced = tg.create_task(_produce(input_path, queue, concurrency))
        count = produced.result()
    if writer.written != count:
        raise RuntimeError(f"wrote {writer.written} records for {count} items")
    return count


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--processor", choices=PROCESSORS, default="noop")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--latency", type=float, default=0.01, help="seconds, for 'sleep'")
    p.add_argument("--uvloop", action="store_true", help="run on uvloop instead of asyncio")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if args.uvloop:
        import uvloop

        loop_factory = uvloop.new_event_loop
    t0 = time.perf_counter()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        n = runner.run(run(args.input, args.output, args.processor, args.concurrency, args.latency))
    elapsed = time.perf_counter() - t0
    rate = n / elapsed if elapsed > 0 else 0.0
    sys.stdout.write(
        orjson.dumps({"items": n, "elapsed_s": elapsed, "items_per_s": rate}).decode() + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
