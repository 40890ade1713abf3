"""The processors of bench_fixed.py, loaded by file path by both asyncproc and the baseline.

Both programs write ``{"index": i, **result}`` JSON lines, so the same functions give
byte-identical outputs and the benchmark can compare them.
"""

from __future__ import annotations

import asyncio


async def noop(item: str) -> dict[str, str]:
    """Nothing but the item back: what is left is each program's own cost."""
    return {"item": item}


async def sleep10(item: str) -> dict[str, str]:
    """10 ms of simulated I/O per item."""
    await asyncio.sleep(0.01)
    return {"item": item}
