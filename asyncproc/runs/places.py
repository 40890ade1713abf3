"""Where run management looks: the directory given, or the default and the run index.

``asyncproc run`` keeps runs beside its output, so ``asyncproc list`` must look further
than ``./.asyncproc``: it also reads, from the per-user run index (:mod:`.index`), the
checkpoint directories of the runs started from the current directory (or of every
recent run, ``--all``), and says where it looked. Given ``--checkpoint DIR``, only DIR is
read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from .._errors import RunNotFoundError
from .index import index_path
from .manage import Runs, current_of
from .views import RunView

if TYPE_CHECKING:
    from .remote import RemoteRuns

AnyRuns: TypeAlias = "Runs | RemoteRuns"  # a local checkpoint directory, or one at a URL


class Places:
    """The checkpoint directories one command reads, the first being the one named."""

    def __init__(self, places: Sequence[AnyRuns], explicit: bool, everywhere: bool = True) -> None:
        self.places, self.explicit, self.everywhere = list(places), explicit, everywhere

    @property
    def first(self) -> AnyRuns:
        return self.places[0]

    def where(self) -> str:
        """Where this looked, in words, for the user."""
        first = self.first.checkpoint_dir
        if self.explicit:
            return f"under {first}"
        others = len(self.places) - 1
        more = f"{others} more checkpoint director{'y' if others == 1 else 'ies'}"
        index = f"the run index ({index_path()})"
        if self.everywhere:
            return (
                f"under {first} (the default) {f'and {more} from' if others else 'and in'} {index}"
            )
        where = f"{more} of runs started here" if others else "in the runs started here"
        return f"under {first} (the default) and {where} (from {index_path()}; --all: every run)"

    def views(self) -> tuple[list[RunView], list[str]]:
        """Every run of every place, newest first, and the problems met."""
        views: list[RunView] = []
        problems: list[str] = []
        for runs in self.places:
            found, trouble = runs.views()
            views += found
            problems += trouble
        views.sort(key=lambda v: v.started_at, reverse=True)
        return views, problems

    def runs_of(self, run_id: str) -> AnyRuns:
        """The place that holds ``run_id`` (the named or default one first)."""
        for runs in self.places:
            if runs.has(run_id):
                return runs
        raise RunNotFoundError(
            f"no run {run_id!r} {self.where()}; see `asyncproc list` for the run ids, or "
            "give --checkpoint DIR (the directory `run` was given)"
        )

    def view(self, run_id: str) -> RunView:
        return self.runs_of(run_id).view(run_id)

    def current(self) -> RunView:
        """The newest run going on now, else the newest unfinished one, anywhere here."""
        views, _ = self.views()
        chosen = current_of(views)
        if chosen is None:
            raise RunNotFoundError(
                f"no unfinished run {self.where()}; name one with `asyncproc status RUN_ID`, "
                "or give --checkpoint DIR (the directory `run` was given)"
            )
        return chosen


def distinct(paths: Sequence[Path]) -> list[Path]:
    """``paths`` without repeats (as resolved), in order."""
    seen: dict[Path, Path] = {}
    for path in paths:
        seen.setdefault(path.resolve(), path)
    return list(seen.values())
