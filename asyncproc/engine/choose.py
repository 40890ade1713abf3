"""Choosing the run an invocation works on: an unfinished one to resume, or a new plan.

Blocking; the coordinator runs it in a worker thread while it holds the checkpoint
directory's lock, and takes the run's own lock before letting go of it.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from .._errors import ConfigError, IncompatibleRunError, InputChangedError, OutputError, RunError
from .._options import Options, auto_workers
from ..runs.remote import find_resumable, new_run_dir, run_at
from ..runs.rundir import RunDir
from ..storage.location import Location
from ..storage.records import InputIdentity, Manifest, RunStatus
from .sources import change_in, plan_input

log = logging.getLogger("asyncproc")


@dataclass(frozen=True, slots=True)
class Chosen:
    """The run this invocation works on."""

    run: RunDir
    manifest: Manifest
    resumed: bool


@dataclass(frozen=True, slots=True)
class Wanted:
    """What the invocation asked for, as far as choosing a run is concerned."""

    input: Location
    output: Location
    options: Options
    new_run: bool = False
    resume: str | None = None
    include_completed: bool = False  # --retry-failed may work on a completed run


def check_output(output: Path, input_path: Path) -> None:
    """Refuse an output that cannot be written, before any work."""
    if output.resolve() == input_path.resolve():
        raise ConfigError(f"output {output} is the input; choose another --output")
    if output.is_dir():
        raise OutputError(f"output {output} is a directory; give a file path")
    parent = output.parent
    if not parent.is_dir():
        raise OutputError(f"output directory {parent} does not exist; create it first")
    _probe_writable(parent)


def _probe_writable(directory: Path) -> None:
    """Create and remove a file there: permission bits alone miss root, ACLs, read-only mounts."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".asyncproc-probe-"):
            pass
    except OSError as exc:
        raise OutputError(
            f"output directory {directory} is not writable ({exc.strerror}); "
            "check its permissions or choose another --output"
        ) from None


def require_unchanged(
    identity: InputIdentity, run_id: str, when: str, options: Mapping[str, Any] | None = None
) -> None:
    """Refuse to go on with an input that is not the one the run planned.

    ``when`` says how the change matters: "since" (a resume) or "while" (before a merge).
    """
    change = change_in(identity, options)
    if change is None:
        return
    if when == "while":
        raise InputChangedError(
            f"input {identity.path} changed ({change}) while run {run_id} was running; its "
            "output would mix two versions: start over with --new-run"
        )
    raise InputChangedError(
        f"input {identity.path} changed ({change}) since run {run_id} was planned; "
        "restore it, or start over with --new-run"
    )


def existing(checkpoint_dir: Location, wanted: Wanted) -> Chosen | None:
    """The run to resume, checked against the input and the options; None for a new run."""
    if wanted.resume:
        run: RunDir | None = run_at(checkpoint_dir, wanted.resume)
    elif wanted.new_run:
        return None
    else:
        run = find_resumable(
            checkpoint_dir, wanted.input.url, wanted.output.url,
            completed=wanted.include_completed,
        )  # fmt: skip
    if run is None:
        return None
    manifest = run.read()
    if manifest.status is RunStatus.COMPLETED and not wanted.include_completed:
        raise RunError(f"run {run.run_id} is already completed; run without --resume to start anew")
    require_unchanged(manifest.input, run.run_id, "since", wanted.input.options)
    differences = wanted.options.result_differences(manifest.options)
    if differences:
        raise IncompatibleRunError(
            f"run {run.run_id} was started with other options ({'; '.join(differences)}); "
            "resume with the same options, or start over with --new-run"
        )
    return Chosen(run, manifest, resumed=True)


def planned_workers(options: Options, size: int) -> int:
    """Units in a new plan: ``--workers``, else one per 16 MiB (at least one per process)."""
    return options.workers or max(options.processes, auto_workers(size))


def new_run(checkpoint_dir: Location, wanted: Wanted) -> Chosen:
    """Plan the input into a new run directory: the index first, then the manifest."""
    planned = plan_input(wanted.input, partial(planned_workers, wanted.options))
    workers = planned_workers(wanted.options, planned.identity.size)
    run = new_run_dir(checkpoint_dir)
    run.write_index(planned.index)
    now = time.time()
    manifest = Manifest(
        run_id=run.run_id, status=RunStatus.RUNNING, created_at=now, updated_at=now,
        input=planned.identity, output=wanted.output.url,
        options={**wanted.options.to_dict(), "workers": workers}, units=planned.units,
        total_items=planned.total_items,
    )  # fmt: skip
    run.write(manifest)
    log.info(
        "planned run %s: %d items in %d unit(s)", run.run_id, manifest.total_items,
        len(planned.units),
    )  # fmt: skip
    return Chosen(run, manifest, resumed=False)
