"""Calling the processor: one attempt bounded by the timeout, retries with backoff."""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from .._errors import ItemTimeoutError
from ..processors.loading import Processor
from .forks import FORKED, leave
from .threads import ThreadPool

BACKOFF_BASE = 0.1
BACKOFF_CAP = 10.0

# What a processor may raise about one item without stopping the run: anything. A
# SystemExit, a KeyboardInterrupt, a GeneratorExit, a custom BaseException or a
# CancelledError of its own are that item's failure: real signals reach the run through
# its own handlers. Only a cancellation of the calling task itself (a timeout, a stop)
# goes on up: every ``except ITEM_ERRORS`` asks :func:`cancelled` first.
ITEM_ERRORS = (BaseException,)

Call = Callable[[Any], Awaitable[Any]]


def cancelled(exc: BaseException) -> bool:
    """Whether ``exc`` must go on up: the calling task itself is being cancelled.

    A processor may raise a ``CancelledError`` of its own (one it got from a task it
    awaited, say) while nobody cancels the lane: that is the item's failure. An
    ``Exception`` never is a cancellation.
    """
    if isinstance(exc, Exception):
        return False
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def backoff(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Exponential delay before retry ``attempt`` (1-based), with equal jitter."""
    delay = min(cap, base * 2 ** (attempt - 1))
    return random.uniform(delay / 2, delay)


def caller(processor: Processor, timeout: float | None, pool: ThreadPool | None) -> Call:
    """One attempt at one item: on the loop, or (a sync processor) in the pool's threads."""
    plain: Call
    if processor.is_async or pool is None:
        plain = processor.fn
    else:
        plain = functools.partial(pool.call, processor.fn)
    if timeout is None:
        return plain

    async def bounded(item: Any) -> Any:
        with anyio.move_on_after(timeout):
            return await plain(item)
        raise ItemTimeoutError(f"attempt took longer than the timeout of {timeout:g}s")

    return bounded


async def retry(
    call: Call, item: Any, error: BaseException, retries: int
) -> tuple[Any, BaseException | None, int]:
    """After a failed first attempt: back off and try again, up to ``retries`` times.

    Returns (value, None, attempts) on success, (None, last error, attempts) otherwise.
    """
    if not getattr(error, "retryable", True):  # e.g. an HTTP 404: trying again cannot help
        return None, error, 1
    for attempt in range(1, retries + 1):
        await anyio.sleep(backoff(attempt))
        try:
            value = await call(item)
            if FORKED[0]:
                leave()
            return value, None, attempt + 1
        except ITEM_ERRORS as exc:
            if FORKED[0]:
                leave()
            if cancelled(exc):
                raise
            error = exc
            if not getattr(error, "retryable", True):
                return None, error, attempt + 1
    return None, error, retries + 1
