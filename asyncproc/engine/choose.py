"""Choosing the run an invocation works on: an unfinished one to resume, or a new plan.

Blocking; the coordinator runs it in a worker thread while it holds the checkpoint
directory's lock, and takes the run's own lock before letting go of it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from .._errors import (
    ConfigError,
    IncompatibleRunError,
    InputChangedError,
    OutputError,
    RunError,
    named,
    option,
)
from .._options import Options, auto_workers
from ..runs.locks import output_lock
from ..runs.rundir import RunDir, failed_items_path
from ..runs.store import RunStore, find_resumable
from ..storage.links import resolve_safely
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
    """Refuse an output that cannot be written, or whose writing would destroy the input
    or could be read or rewritten by someone else.

    The run writes the output and ``<stem>.failed.jsonl`` beside it (and removes the
    latter when nothing failed): neither may be the input, by any name. A symlink on the
    way is followed only by the kernel's rule (:func:`resolve_safely`), and the file at
    the end may not belong to another user (:func:`require_mine`).
    """
    try:
        target = resolve_safely(output)
    except OSError as exc:  # a link loop, a folder we may not search
        raise OutputError(
            f"output {output} cannot be reached ({exc.strerror}); choose another " + named("output")
        ) from None
    if _same_file(output, input_path):
        raise ConfigError(f"output {output} is the input; choose another {named('output')}")
    failed = failed_items_path(output)
    if _same_file(failed, input_path):
        raise ConfigError(
            f"input {input_path} is where this run would write its failed items ({failed}): "
            "it would be overwritten or removed; rename the input or choose another "
            + named("output")
        )
    if output.is_dir():
        raise OutputError(f"output {output} is a directory; give a file path")
    parent = output.parent
    if not parent.is_dir():
        raise OutputError(f"output directory {parent} does not exist; create it first")
    require_mine(target)
    require_mine(failed_items_path(target))


def require_mine(path: Path) -> None:
    """Refuse to replace a file another user owns: they could rewrite what is published
    (root would otherwise hand the new file to them, keeping the old owner)."""
    try:
        owner = os.stat(path, follow_symlinks=False).st_uid
    except (FileNotFoundError, NotADirectoryError):
        return
    if owner != os.geteuid():
        raise OutputError(
            f"{path} belongs to uid {owner}, who could rewrite what this run "
            f"publishes; remove it or choose another {named('output')}"
        )


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)  # another name for the same file (a hard link)
    except OSError:
        return False


@contextmanager
def held_output(output: Path) -> Iterator[None]:
    """Hold the output for the whole invocation (:func:`output_lock`).

    Creating the lock file beside the output is also the check that its directory takes
    new files: permission bits alone miss root, ACLs and read-only mounts.
    """
    with ExitStack() as stack:
        try:
            stack.enter_context(output_lock(output))
        except OSError as exc:
            raise OutputError(
                f"output directory {output.parent} is not writable ({exc.strerror}); "
                f"check its permissions or choose another {named('output')}"
            ) from None
        yield


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
            f"output would mix two versions: start over with {option('new_run')}"
        )
    raise InputChangedError(
        f"input {identity.path} changed ({change}) since run {run_id} was planned; "
        f"restore it, or start over with {option('new_run')}"
    )


def existing(store: RunStore, wanted: Wanted) -> Chosen | None:
    """The run to go on with, checked against the input and the options; None for a new run.

    Without ``--resume`` it is the newest run of this input into this output: an
    unfinished one is resumed; a completed one is reported as it is, unless the input or
    the options changed or its output is gone (then a new run starts). A run killed
    after it completed is then never redone.
    """
    if wanted.resume:
        run: RunDir | None = store.run(wanted.resume)
    elif wanted.new_run:
        return None
    else:
        run = find_resumable(store, *_pair(wanted), completed=True)
    if run is None:
        return None
    manifest = run.read()
    if wanted.resume:
        _require_pair(run, manifest, wanted)
    if manifest.status is RunStatus.COMPLETED and not wanted.include_completed:
        if wanted.resume:
            raise RunError(
                f"run {run.run_id} is already completed; leave out {named('resume')} to see it"
            )
        return _finished(run, manifest, wanted)
    require_unchanged(manifest.input, run.run_id, "since", wanted.input.options)
    differences = wanted.options.result_differences(manifest.options)
    if differences and wanted.include_completed:
        raise ConfigError(
            f"run {run.run_id} was started with other options ({'; '.join(differences)}); "
            f"a retry uses the run's: {wanted.options.to_add(manifest.options)}"
        )
    if differences:
        raise IncompatibleRunError(
            f"run {run.run_id} was started with other options ({'; '.join(differences)}); "
            f"resume with the same options, or start over with {option('new_run')}"
        )
    return Chosen(run, manifest, resumed=True)


def _pair(wanted: Wanted) -> tuple[str, str]:
    return wanted.input.url, wanted.output.url


def _require_pair(run: RunDir, manifest: Manifest, wanted: Wanted) -> None:
    """A run named by ``--resume`` must be of this input into this output.

    Otherwise the run would read and write the paths its manifest names, not the ones
    given: a run is confined to the pair it was planned for.
    """
    if (manifest.input.path, manifest.output) != _pair(wanted):
        raise IncompatibleRunError(
            f"run {run.run_id} processes {manifest.input.path} into {manifest.output}, not "
            f"{wanted.input} into {wanted.output}; give its {named('input')} and "
            f"{named('output')} to resume it, or leave out {named('resume')}"
        )


def _finished(run: RunDir, manifest: Manifest, wanted: Wanted) -> Chosen | None:
    """A completed run of this pair, to report as done; None if it no longer stands."""
    why = _stale(manifest, wanted)
    if why is not None:
        log.info("run %s of this input completed, but %s: starting a new run", run.run_id, why)
        return None
    log.info(
        "run %s already completed this input into %s; nothing to do (--new-run "
        "processes it again)", run.run_id, manifest.output,
    )  # fmt: skip
    return Chosen(run, manifest, resumed=True)


def _stale(manifest: Manifest, wanted: Wanted) -> str | None:
    """Why a completed run's output is not what this invocation asks for, or None."""
    change = change_in(manifest.input, wanted.input.options)
    if change is not None:
        return f"the input changed since ({change})"
    differences = wanted.options.result_differences(manifest.options)
    if differences:
        return f"with other options ({'; '.join(differences)})"
    if not wanted.output.exists() or not manifest.summary:
        return "its output is gone"
    return None


def planned_workers(options: Options, size: int) -> int:
    """Units in a new plan: ``--workers``, else one per 16 MiB (at least one per process)."""
    return options.workers or max(options.processes, auto_workers(size))


def new_run(store: RunStore, wanted: Wanted) -> Chosen:
    """Plan the input into a new run directory: the index first, then the manifest."""
    fmt = str(wanted.options.format or "text")
    planned = plan_input(wanted.input, partial(planned_workers, wanted.options), fmt)
    workers = planned_workers(wanted.options, planned.identity.size)
    run = store.new_run()
    run.write_index(planned.index)
    now = time.time()
    manifest = Manifest(
        run_id=run.run_id, status=RunStatus.RUNNING, created_at=now, updated_at=now,
        input=planned.identity, output=wanted.output.url,
        options={**wanted.options.to_dict(), "workers": workers}, units=planned.units,
        total_items=planned.total_items, resumed_at=now,
    )  # fmt: skip
    run.write(manifest)
    log.info(
        "planned run %s: %d items in %d unit(s)", run.run_id, manifest.total_items,
        len(planned.units),
    )  # fmt: skip
    return Chosen(run, manifest, resumed=False)
