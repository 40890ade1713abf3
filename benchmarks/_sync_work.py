"""A plain ``def`` processor for ``bench_v2.py sync``: 10 ms of blocking work per item.

asyncproc runs it in worker threads (``--processor benchmarks/_sync_work.py:work``);
the baseline maps it over a ``ThreadPoolExecutor``. The result is a small dict, so
asyncproc's ``.jsonl`` line is ``{"index": i, "item": ..., "length": ...}``.
"""

from __future__ import annotations

import time

BLOCK_S = 0.01


def work(item: str) -> dict[str, object]:
    time.sleep(BLOCK_S)  # stands for a blocking client call
    return {"item": item, "length": len(item)}
