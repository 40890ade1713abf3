"""A processor that spends about 50 us of CPU per item (for ``--processes``)."""

from __future__ import annotations

import time

BURN_S = 50e-6


async def burn(item: str) -> str:
    """Spin for ``BURN_S`` seconds of wall time on this core, then return the item."""
    deadline = time.perf_counter() + BURN_S
    while time.perf_counter() < deadline:
        pass
    return item
