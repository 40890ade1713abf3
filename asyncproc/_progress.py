"""Progress: a percentage line at checkpoints, and a live bar when stderr is a terminal."""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Any

log = logging.getLogger("asyncproc")

MIN_LOG_GAP = 0.5  # seconds between two progress lines, except the last one


def fmt_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    """Counts committed items for the whole run and reports them."""

    def __init__(self, total: int, done: int, failed: int, *, quiet: bool) -> None:
        self.total, self.done, self.failed = total, done, failed
        self.done_at_start = done
        self.started = time.monotonic()
        self._quiet = quiet
        self._last_log = 0.0
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if not self._quiet and sys.stderr.isatty():
            self._start_bar()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def _start_bar(self) -> None:
        from rich.progress import (  # imported lazily: only terminals pay for it
            BarColumn,
            MofNCompleteColumn,
            TaskProgressColumn,
            TimeRemainingColumn,
        )  # fmt: skip
        from rich.progress import (
            Progress as Bar,
        )

        self._bar = Bar(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
            TaskProgressColumn(), TimeRemainingColumn(), transient=True,
        )  # fmt: skip
        self._task = self._bar.add_task("asyncproc", total=self.total, completed=self.done)
        self._bar.start()

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return (self.done - self.done_at_start) / elapsed if elapsed > 0 else 0.0

    def advance(self, processed: int, failed: int) -> None:
        """Account for one shard commit; log a line unless one went out just now."""
        if not processed + failed:
            return
        self.done += processed + failed
        self.failed += failed
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
        now = time.monotonic()
        if self.done >= self.total or now - self._last_log >= MIN_LOG_GAP:
            self._last_log = now
            self.report()

    def report(self) -> None:
        if self._quiet:
            return
        percent = 100.0 * self.done / self.total if self.total else 100.0
        rate = self.rate
        eta = fmt_duration((self.total - self.done) / rate) if rate > 0 else "?"
        log.info(
            "%.1f%% (%d/%d items, %d failed), %.0f items/s, ETA %s",
            percent, self.done, self.total, self.failed, rate, eta,
        )  # fmt: skip
