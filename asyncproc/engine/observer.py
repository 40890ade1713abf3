"""What the engine tells the world about a run's progress: a small protocol.

The coordinator reports to an observer it is handed and never draws anything itself:
log lines (:class:`LogProgress`, the default), the CLI's live bar, ``status --watch``
or a metrics exporter are all observers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("asyncproc")

MIN_LOG_GAP = 0.5  # seconds between two progress lines, except the last one


class RunObserver(Protocol):
    """Receives a run's progress, committed item counts only."""

    def started(self, total: int, done: int, failed: int) -> None:
        """Work begins; ``done`` and ``failed`` were committed before (a resume)."""
        ...

    def committed(self, processed: int, failed: int) -> None:
        """A durable commit added ``processed`` succeeded and ``failed`` failed items."""
        ...

    def stopped(self) -> None:
        """Work has ended, for whatever reason."""
        ...


def fmt_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class LogProgress:
    """A percentage line on the ``asyncproc`` logger at commits, at most two a second."""

    def __init__(self) -> None:
        self.total = self.done = self.failed = self.done_at_start = 0
        self.started_at = time.monotonic()
        self._last_log = 0.0
        self.detail: Callable[[], str] | None = None  # appended to each line (the limits)

    def started(self, total: int, done: int, failed: int) -> None:
        self.total, self.done, self.failed = total, done, failed
        self.done_at_start = done
        self.started_at = time.monotonic()

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started_at
        return (self.done - self.done_at_start) / elapsed if elapsed > 0 else 0.0

    def committed(self, processed: int, failed: int) -> None:
        if not processed + failed:
            return
        self.done += processed + failed
        self.failed += failed
        now = time.monotonic()
        if self.done >= self.total or now - self._last_log >= MIN_LOG_GAP:
            self._last_log = now
            self.report()

    def report(self) -> None:
        percent = 100.0 * self.done / self.total if self.total else 100.0
        rate = self.rate
        eta = fmt_duration((self.total - self.done) / rate) if rate > 0 else "?"
        detail = f", {self.detail()}" if self.detail is not None else ""
        log.info(
            "%.1f%% (%d/%d items, %d failed), %.0f items/s, ETA %s%s",
            percent, self.done, self.total, self.failed, rate, eta, detail,
        )  # fmt: skip

    def stopped(self) -> None:
        return None


class Silent:
    """An observer that shows nothing (``quiet``)."""

    def started(self, total: int, done: int, failed: int) -> None:
        return None

    def committed(self, processed: int, failed: int) -> None:
        return None

    def stopped(self) -> None:
        return None
