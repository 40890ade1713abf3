"""A processor that logs every call, for ``bench_v2.py resume``: counts re-executions.

When ``$ASYNCPROC_BENCH_CALL_LOG`` names a file, each call appends ``item\\n`` to it with
one ``O_APPEND`` write (lines from concurrent calls, threads or processes never
interleave), then sleeps ``DELAY_S`` so that a crash leaves items in flight. Counting
the log's lines across the crash run and the resume tells how often each item was
really processed. The result is ``{"item": item, "length": len(item)}``.
"""

from __future__ import annotations

import asyncio
import os

ENV_VAR = "ASYNCPROC_BENCH_CALL_LOG"
DELAY_S = 0.002

_LOG = os.environ.get(ENV_VAR)


def log_call(item: str) -> None:
    if not _LOG:
        return
    fd = os.open(_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (item + "\n").encode("utf-8"))
    finally:
        os.close(fd)


async def work(item: str) -> dict[str, object]:
    log_call(item)
    await asyncio.sleep(DELAY_S)
    return {"item": item, "length": len(item)}
