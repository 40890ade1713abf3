"""The CLI's progress: log lines, plus a live rich bar when stderr is a terminal."""

from __future__ import annotations

import sys
from typing import Any

from ..engine.observer import LogProgress, RunObserver, Silent


class BarProgress(LogProgress):
    """Log lines and a transient bar; rich is imported only when a terminal shows it."""

    def __init__(self) -> None:
        super().__init__()
        self._bar: Any = None
        self._task: Any = None

    def started(self, total: int, done: int, failed: int) -> None:
        super().started(total, done, failed)
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
            TaskProgressColumn(), TimeRemainingColumn(), transient=True,
        )  # fmt: skip
        self._task = self._bar.add_task(self._label(), total=total, completed=done)
        self._bar.start()

    def _label(self) -> str:
        """The bar's label: the failures so far, in red, once there are any."""
        return f"asyncproc [bold red]{self.failed:,} failed[/]" if self.failed else "asyncproc"

    def committed(self, processed: int, failed: int) -> None:
        super().committed(processed, failed)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, description=self._label())

    def stopped(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def observer_for(quiet: bool) -> RunObserver:
    """Nothing when quiet; a bar on a terminal; log lines otherwise."""
    if quiet:
        return Silent()
    return BarProgress() if sys.stderr.isatty() else LogProgress()
