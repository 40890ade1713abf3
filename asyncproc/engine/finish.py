"""Finishing a run: merge the units' committed output, record the summary, clear state.

Blocking; the coordinator runs it in a worker thread. Each step can be redone after a
crash: the merge publishes by rename, the manifest says ``merged`` before any state is
cleared, and clearing is idempotent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from .._errors import CheckpointError, again
from ..runs.rundir import RunDir
from ..storage.faults import crashpoint
from ..storage.location import Location, is_url
from ..storage.records import Manifest, RunStatus
from .merge import merge
from .sources import merge_remote
from .state import RunState
from .summary import Summary


def merge_output(
    run: RunDir, manifest: Manifest, state: RunState, options: Mapping[str, Any] | None = None
) -> Path | str | None:
    """Merge every unit, in order of its start; refuse if any is unfinished."""
    plan = state.plan
    unfinished = [u.unit_id for u in plan if not plan.is_done(state.states[u.unit_id])]
    if unfinished:
        raise CheckpointError(
            f"run {run.run_id} has unfinished units {unfinished} after its workers ended; "
            f"{again()} to resume"
        )
    ordered = [state.states[u.unit_id] for u in plan]
    as_array = manifest.options["output_kind"] == "json"
    if is_url(manifest.output):  # storage options are never stored: the invocation's
        return merge_remote(run.storage, ordered, Location(manifest.output, options), as_array)
    return merge(run.storage, ordered, Path(manifest.output), as_array)


def finish(run: RunDir, manifest: Manifest, resumed: bool) -> Summary:
    """Clear the merged run's state and mark it completed."""
    crashpoint("before_clear")
    run.clear_state()
    crashpoint("after_clear")
    manifest = run.set_status(manifest, RunStatus.COMPLETED)
    crashpoint("after_completed")
    summary = Summary.from_dict(manifest.summary or {})
    return replace(summary, resumed=resumed, checkpoint_cleared=True)
