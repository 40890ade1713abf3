"""Identity processor that stamps the wall-clock time of its first call.

Used by ``bench_core.py`` scenario (c) as ``--processor benchmarks/_first_item.py:fn``.
It returns the item unchanged, exactly like asyncproc's ``identity`` processor.

On its first call in a process, if the environment variable named by ``ENV_VAR``
is set, it creates the file named there with a JSON object
``{"t": time.time(), "maxrss_kb": ru_maxrss}``: the wall-clock time of the first
call and the process's peak RSS so far (what start-up / resume planning took).
If the file already exists (another process got there first) it is left alone.

If ``DELAY_ENV_VAR`` is set to a number of seconds, every call first sleeps that
long.  The benchmark sets it only for the run it crashes on purpose, so that
commits happen item by item and the crash really leaves half of a tiny input to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import time

ENV_VAR = "ASYNCPROC_BENCH_FIRST_ITEM"
DELAY_ENV_VAR = "ASYNCPROC_BENCH_ITEM_DELAY"

_delay = float(os.environ.get(DELAY_ENV_VAR) or 0.0)

_stamped = False


def _stamp() -> None:
    global _stamped
    _stamped = True
    now = time.time()
    path = os.environ.get(ENV_VAR)
    if not path:
        return
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with contextlib.suppress(FileExistsError), open(path, "x", encoding="ascii") as f:
        f.write(json.dumps({"t": now, "maxrss_kb": rss}))


async def fn(item: str) -> str:
    if not _stamped:
        _stamp()
    if _delay:
        await asyncio.sleep(_delay)
    return item
