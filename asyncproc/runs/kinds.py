"""Kinds of run that live under a checkpoint directory, and the one interface they share.

File runs (``manifest.json``) and keyed runs (``keyed.json``, from the keyed layer above)
are told apart by the record their directory holds. Run management asks each kind it
is handed for views and failures; it never imports a kind itself, so the keyed layer
stays above it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from .rundir import RunDir
from .views import RunView


class RunKind(Protocol):
    """What run management needs from one kind of run."""

    @property
    def name(self) -> str:
        """``file`` or ``keyed``: the ``kind`` of its views."""
        ...

    @property
    def marker(self) -> str:
        """The record file whose presence makes a directory a run of this kind."""
        ...

    def view(self, path: Path) -> RunView:
        """Read the run in a local folder without taking its lock."""
        ...

    def view_run(self, run: RunDir) -> RunView:
        """Read the run, on any storage, without taking its lock."""
        ...

    def run_failures(self, run: RunDir, view: RunView, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` most recent failures of a run on any storage, newest first."""
        ...

    def failures(self, view: RunView, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` most recent failures, newest first."""
        ...
