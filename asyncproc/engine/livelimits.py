"""Showing a run's limits while it works: the progress line and ``limits.json``."""

from __future__ import annotations

import logging

import anyio

from ..limits.gate import Gate
from ..runs.live import write_live
from ..runs.rundir import RunDir
from .observer import RunObserver

log = logging.getLogger("asyncproc")

PUBLISH_EVERY = 1.0  # seconds between two limits.json writes


def limits_text(gate: Gate) -> str:
    """``concurrency 23 (auto), 4 rejected``: the progress line's tail."""
    auto = " (auto)" if gate.config.adaptive else ""
    rejected = f", {gate.rejected} rejected" if gate.rejected else ""
    return f"concurrency {gate.limit}{auto}{rejected}"


def show_limits(observer: RunObserver, gate: Gate) -> None:
    """Let a progress observer append the limits to its lines (if it takes a detail)."""
    if hasattr(observer, "detail"):
        observer.detail = lambda: limits_text(gate)


async def publish_limits(run: RunDir, gate: Gate) -> None:
    """Write the current limit for ``status`` about once a second, until cancelled."""
    last: dict[str, int] | None = None
    while True:
        data = {"concurrency_limit": gate.limit, "adaptive": int(gate.config.adaptive),
                "rejected": gate.rejected, "pauses": gate.pauses}  # fmt: skip
        if data != last:
            try:
                await anyio.to_thread.run_sync(write_live, run.storage, data)
            except OSError as exc:  # advisory: the run goes on without it
                log.debug("could not write the live limits of %s: %s", run.run_id, exc)
            last = data
        await anyio.sleep(PUBLISH_EVERY)
