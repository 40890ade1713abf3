"""Skewed latency for ``bench_v2.py skew``: stragglers in one corner of the input.

An item ``slow-NNNNNN`` sleeps ``SLOW_S`` (20 ms), any other item ``FAST_S`` (1 ms);
the result is the item itself, so asyncproc's ``.jsonl`` output equals the bare pool's
(``bare_asyncio.OrderedWriter``) byte for byte. Used by asyncproc as
``--processor benchmarks/_skew.py:work`` and by the bare pool by import.
"""

from __future__ import annotations

import asyncio

SLOW_S = 0.02
FAST_S = 0.001
SLOW_PREFIX = "slow-"


def delay_of(item: str) -> float:
    """Seconds the item sleeps: decided by its text alone."""
    return SLOW_S if item.startswith(SLOW_PREFIX) else FAST_S


async def work(item: str) -> str:
    await asyncio.sleep(SLOW_S if item.startswith(SLOW_PREFIX) else FAST_S)
    return item
