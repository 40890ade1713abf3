"""Calling the processor: the fast first attempt, then bounded retries with backoff."""

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

# (value, error, attempts): error is None when the item succeeded.
Outcome = tuple[Any, BaseException | None, int]


def backoff(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Exponential delay before retry ``attempt`` (1-based), with equal jitter."""
    delay = min(cap, base * 2 ** (attempt - 1))
    return random.uniform(delay / 2, delay)


class Attempts:
    """Runs the processor on one item up to ``retries + 1`` times.

    Lanes call ``call`` directly for the first attempt (the hot path) and ``retry``
    only after it failed.
    """

    def __init__(self, processor: Processor, retries: int, timeout: float | None) -> None:
        self._retries = retries
        self.call = _caller(processor, timeout)

    async def run(self, item: Any) -> Outcome:
        try:
            return await self.call(item), None, 1
        except ITEM_ERRORS as exc:  # an item's failure is data, not a crash
            return await self.retry(item, exc)

    async def retry(self, item: Any, error: BaseException) -> Outcome:
        """After a failed first attempt: back off and try again, up to the limit."""
        for attempt in range(1, self._retries + 1):
            await anyio.sleep(backoff(attempt))
            try:
                return await self.call(item), None, attempt + 1
            except ITEM_ERRORS as exc:
                error = exc
        return None, error, self._retries + 1


def _caller(processor: Processor, timeout: float | None) -> Callable[[Any], Awaitable[Any]]:
    plain: Callable[[Any], Awaitable[Any]] = (
        processor.fn if processor.is_async else processor.__call__
    )
    if timeout is None:
        return plain

    async def bounded(item: Any) -> Any:
        with anyio.move_on_after(timeout):
            return await plain(item)
        raise ItemTimeoutError(f"attempt took longer than --timeout {timeout:g}s")

    return bounded
