"""Calling the processor: one attempt bounded by the timeout, retries with backoff."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from .._errors import ItemTimeoutError
from .processors import Processor

BACKOFF_BASE = 0.1
BACKOFF_CAP = 10.0

# What a processor may raise about one item without stopping the run. SystemExit and
# KeyboardInterrupt from user code are the item's failure too: real signals reach the
# run through its own handlers, and cancellation is never caught here.
ITEM_ERRORS = (Exception, SystemExit, KeyboardInterrupt)

Call = Callable[[Any], Awaitable[Any]]


def backoff(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Exponential delay before retry ``attempt`` (1-based), with equal jitter."""
    delay = min(cap, base * 2 ** (attempt - 1))
    return random.uniform(delay / 2, delay)


def caller(processor: Processor, timeout: float | None, threads: int) -> Call:
    """One attempt at one item: on the loop, or in one of ``threads`` worker threads.

    Sync processors get a thread limiter of their own, sized to the run's concurrency
    (anyio's default limiter would cap them at 40 threads).
    """
    plain: Call
    if processor.is_async:
        plain = processor.fn
    else:
        plain = _in_threads(processor.fn, anyio.CapacityLimiter(threads))
    if timeout is None:
        return plain

    async def bounded(item: Any) -> Any:
        with anyio.move_on_after(timeout):
            return await plain(item)
        raise ItemTimeoutError(f"attempt took longer than --timeout {timeout:g}s")

    return bounded


def _in_threads(fn: Callable[[Any], Any], limiter: anyio.CapacityLimiter) -> Call:
    async def threaded(item: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, item, limiter=limiter)

    return threaded


async def retry(
    call: Call, item: Any, error: BaseException, retries: int
) -> tuple[Any, BaseException | None, int]:
    """After a failed first attempt: back off and try again, up to ``retries`` times.

    Returns (value, None, attempts) on success, (None, last error, attempts) otherwise.
    """
    for attempt in range(1, retries + 1):
        await anyio.sleep(backoff(attempt))
        try:
            return await call(item), None, attempt + 1
        except ITEM_ERRORS as exc:
            error = exc
    return None, error, retries + 1
