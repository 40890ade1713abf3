"""``cleanup``: delete the finished runs beyond the newest ``keep``, on any checkpoint dir.

One implementation for a local directory (:class:`~.manage.Runs`) and a URL
(:class:`~.remote.RemoteRuns`): each says how it lists and deletes its runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from .._errors import RunError
from .views import FINISHED, RunView


class Cleanup(ABC):
    """Clean-up over the runs of one checkpoint directory, however they are stored."""

    @abstractmethod
    def views(self) -> tuple[list[RunView], list[str]]:
        """Every run, newest first, and a line for each one that could not be read."""

    @abstractmethod
    def delete(self, run_id: str) -> None:
        """Remove a run; RunError if it is being worked on (or is gone)."""

    def cleanup_candidates(self, keep: int) -> list[RunView]:
        """Finished runs beyond the newest ``keep`` finished ones, oldest last."""
        views, _ = self.views()
        return [v for v in views if v.status in FINISHED][keep:]

    def cleanup(self, keep: int) -> list[str]:
        """Delete finished runs beyond the newest ``keep``; return the removed ids.

        A run started again since it was listed (so locked, no longer finished) or
        removed meanwhile is passed over, not an error.
        """
        removed = []
        for view in self.cleanup_candidates(keep):
            try:
                self.delete(view.run_id)
            except RunError:
                continue
            removed.append(view.run_id)
        return removed
