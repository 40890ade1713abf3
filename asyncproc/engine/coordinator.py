"""The coordinator: choose or plan the run, hand its units to an executor, merge, finish.

Blocking steps (planning, loading state, the merge) run in worker threads. Every
decision about the run happens while the checkpoint directory's lock is held, and all
work while the run's own lock is held. The coordinator alone writes the manifest: at the
start, at each split (the plan with the new unit) and at the end.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import anyio

from .._errors import (
    AsyncprocError,
    FailureLimitError,
    Interrupted,
    OutputError,
    RunError,
    unwrap_group,
)
from .._options import DEFAULT_CHECKPOINT, Options
from ..runs.remote import directory_lock, run_url
from ..runs.rundir import RunDir
from ..storage.faults import CRASH_EXIT
from ..storage.location import Location
from ..storage.records import Manifest, RunStatus, UnitPlan
from ..storage.unitstore import UnitStore
from .choose import Chosen, Wanted, check_output, existing, new_run, require_unchanged
from .executor import Executor, InProcess, RunSetup, local_store
from .finish import finish, merge_output
from .observer import LogProgress, RunObserver
from .processors import Fn, Processor, load_processor
from .retry_failed import retry_failed
from .scheduler import Scheduler
from .sources import check_input, check_remote_output
from .state import RunState, load_state, recut_state
from .stopping import Stopper, StopReason
from .summary import Summary
from .unit import Commit
from .units import Extent, Plan, UnitSpec

log = logging.getLogger("asyncproc")


@dataclass(frozen=True, slots=True)
class Request:
    """What the caller asked for, before anything was checked against the disk."""

    input: Location  # a local path or an fsspec URL, with the storage options
    output: Location
    processor: str | Fn
    options: Options
    checkpoint_dir: Location | None = None
    new_run: bool = False
    resume: str | None = None
    handle_signals: bool = False
    retry_failed: bool = False
    observer: RunObserver | None = None  # default: progress lines on the log
    executor: Executor | None = None  # default: every unit on this event loop
    stores: Callable[[UnitSpec], UnitStore] | None = None  # default: files in the run dir


class Coordinator:
    """One invocation of a run: fresh or resumed."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.started = time.monotonic()
        self._stopper = Stopper(request.options.grace)
        self._failure_limit = request.options.failure_limit()
        self._observer: RunObserver = request.observer or LogProgress()
        self._executor: Executor = request.executor or InProcess()
        self._committed_here = self._failed_here = 0
        self._last_error: str | None = None

    async def run(self) -> Summary:
        req = self.request
        processor = load_processor(req.processor, req.options.processor_args)
        check_input(req.input)
        if req.output.is_local:  # a URL input is never the local output: check its folder
            check_output(req.output.path, req.input.local or req.output.path.parent)
        else:
            check_remote_output(req.output, req.input)
        resolved = req.options.resolved(req.input.pure, req.output.pure)
        options = replace(resolved, processor=processor.spec)
        wanted = Wanted(req.input, req.output, options, req.new_run, req.resume, req.retry_failed)
        checkpoint_dir = self._checkpoint_dir()
        async with self._executor.started():
            return await self._run(checkpoint_dir, wanted, processor, options)

    async def _run(
        self, checkpoint_dir: Location, wanted: Wanted, processor: Processor, options: Options
    ) -> Summary:
        req = self.request
        with ExitStack() as stack:
            chosen = await anyio.to_thread.run_sync(self._choose, checkpoint_dir, wanted, stack)
            if chosen.manifest.status is RunStatus.COMPLETED:
                summary = Summary.from_dict(chosen.manifest.summary or {})
            else:
                summary = await self._work(chosen, processor, options)
            if req.retry_failed:  # also clears what an interrupted retry left
                summary = await retry_failed(chosen.run, processor, options, summary)
            return summary

    def _checkpoint_dir(self) -> Location:
        where = self.request.checkpoint_dir or self.request.output.parent.child(DEFAULT_CHECKPOINT)
        if not where.is_local:
            return where
        path = where.path
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create checkpoint directory {path}: {exc.strerror}") from exc
        return where

    def _choose(self, checkpoint_dir: Location, wanted: Wanted, stack: ExitStack) -> Chosen:
        with directory_lock(checkpoint_dir):
            chosen = existing(checkpoint_dir, wanted) or new_run(checkpoint_dir, wanted)
            stack.enter_context(chosen.run.locked())
            return chosen

    # -- working ---------------------------------------------------------------------------

    async def _work(self, chosen: Chosen, processor: Processor, options: Options) -> Summary:
        run, manifest = chosen.run, chosen.manifest
        if manifest.status is RunStatus.MERGED:
            return await anyio.to_thread.run_sync(finish, run, manifest, chosen.resumed)
        workers = self._workers(manifest, options)
        state = await anyio.to_thread.run_sync(load_state, run, manifest)
        state = await anyio.to_thread.run_sync(recut_state, state, workers)
        self._manifest = await anyio.to_thread.run_sync(
            self._record_start, run, manifest, options, state.plan, workers
        )
        try:
            state = await self._execute(run, state, processor, options, workers)
        except BaseExceptionGroup as group:
            cause = unwrap_group(group)
            await self._stopped(run, RunStatus.FAILED, str(cause))
            raise cause from (None if cause is group else group)
        except (AsyncprocError, OSError) as exc:
            await self._stopped(run, RunStatus.FAILED, str(exc))
            raise
        if self._stopper.reason is not None:
            raise await self._stopped_early(run, state, self._stopper.reason)
        manifest = self._manifest
        await anyio.to_thread.run_sync(
            require_unchanged, manifest.input, run.run_id, "while", self.request.input.options
        )
        return await anyio.to_thread.run_sync(
            self._merge_and_finish, run, state, workers, chosen.resumed
        )

    def _workers(self, manifest: Manifest, options: Options) -> int:
        """Units worked on at once: as asked now, else as the run was planned."""
        planned = int(manifest.options.get("workers", len(manifest.units)))
        wanted = max(options.workers or planned, self._executor.processes)
        return max(wanted, int(getattr(self._executor, "units", 0)))  # Dask: cut up front

    def _record_start(
        self, run: RunDir, manifest: Manifest, options: Options, plan: Plan, workers: int
    ) -> Manifest:
        """Record this invocation's options (and a re-cut plan) before any work."""
        stored = {**options.to_dict(), "workers": workers}
        if (
            stored == manifest.options
            and manifest.status is RunStatus.RUNNING
            and plan.units == manifest.units
        ):
            return manifest
        return run.set_status(manifest, RunStatus.RUNNING, options=stored, units=plan.units)

    async def _execute(
        self, run: RunDir, state: RunState, processor: Processor, options: Options, workers: int
    ) -> RunState:
        scheduler = Scheduler(
            state.plan, state.index, dict(state.states),
            spec_for=partial(self._spec, run, options),
            record=partial(self._record_plan, run),
            stopping=lambda: self._stopper.reason is not None,
            on_commit=self._on_commit,
        )  # fmt: skip
        setup = self._setup(processor, options, workers)
        self._observer.started(state.plan.total_items, state.done, state.failed)
        try:
            async with anyio.create_task_group() as outer:
                if self.request.handle_signals:
                    outer.start_soon(self._stopper.watch_signals)
                async with anyio.create_task_group() as tg:
                    self._stopper.scope = tg.cancel_scope
                    tg.start_soon(self._executor.run, scheduler, setup)
                outer.cancel_scope.cancel()
        finally:
            self._observer.stopped()
        return RunState(scheduler.plan, state.index, scheduler.states)

    def _setup(self, processor: Processor, options: Options, workers: int) -> RunSetup:
        return RunSetup(
            processor=processor, processor_args=options.processor_args,
            format=str(options.format), output_kind=str(options.output_kind),
            retries=options.retries, timeout=options.timeout,
            fingerprint=self._manifest.input.fingerprint,
            stores=self.request.stores or local_store, stopper=self._stopper,
            workers=workers, concurrency=options.concurrency,
            threads=options.threads or options.concurrency,
        )  # fmt: skip

    def _spec(self, run: RunDir, options: Options, unit: UnitPlan, extent: Extent) -> UnitSpec:
        return UnitSpec(
            run_id=run.run_id, run_dir=run_url(run), unit_id=unit.unit_id,
            start=unit.start, end=extent.end, first_index=unit.first_index,
            end_index=extent.end_index, input_path=self._manifest.input.path,
            fingerprint=self._manifest.input.fingerprint, format=str(options.format),
            output_kind=str(options.output_kind), batch_size=options.batch_size,
            retries=options.retries, timeout=options.timeout,
            commit_interval=options.commit_interval, durable=options.durable,
            # --simulate-crash wants the crash on the exact item count: no coalescing.
            one_batch_per_commit=options.simulate_crash is not None,
            storage_options=self.request.input.options,
        )  # fmt: skip

    async def _record_plan(self, run: RunDir, plan: Plan) -> None:
        """A split's durable record: the manifest with the new unit in its plan."""
        manifest = replace(self._manifest, units=plan.units, updated_at=time.time())
        await anyio.to_thread.run_sync(run.write, manifest)
        self._manifest = manifest

    # -- accounting ------------------------------------------------------------------------

    def _on_commit(self, commit: Commit) -> None:
        self._observer.committed(commit.processed, commit.failed)
        self._committed_here += commit.processed + commit.failed
        self._failed_here += commit.failed
        self._last_error = commit.last_error or self._last_error
        crash_after = self.request.options.simulate_crash
        if crash_after is not None and self._committed_here >= crash_after:
            self._simulated_crash(commit.checkpoint.run_id)
        limit = self._failure_limit
        if limit is not None and limit.exceeded(self._failed_here, self._committed_here):
            self._stopper.request(StopReason(None, (
                f"{self._failed_here} of {self._committed_here} items failed, over "
                f"--max-failures {limit} (last error: {self._last_error})"
            )))  # fmt: skip

    def _simulated_crash(self, run_id: str) -> None:
        sys.stderr.write(
            f"asyncproc: simulated crash after {self._committed_here} committed items in run "
            f"{run_id}; run the same command again (without --simulate-crash) to resume\n"
        )
        sys.stderr.flush()
        os._exit(CRASH_EXIT)

    # -- stopping --------------------------------------------------------------------------

    async def _stopped(self, run: RunDir, status: RunStatus, why: str) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._mark, run, status, why)

    def _mark(self, run: RunDir, status: RunStatus, why: str) -> None:
        try:
            run.set_status(self._manifest, status, summary={"error": why})
        except OSError:
            log.warning("could not record in its manifest why run %s stopped", run.run_id)

    async def _stopped_early(self, run: RunDir, state: RunState, reason: StopReason) -> RunError:
        resume = "run the same command again to resume"
        if reason.signum is None:
            await self._stopped(run, RunStatus.FAILED, reason.message)
            return FailureLimitError(
                f"{reason.message}; run {run.run_id} stopped after "
                f"committing {state.done} items; fix the cause and {resume}"
            )
        await self._stopped(run, RunStatus.INTERRUPTED, reason.message)
        return Interrupted(f"{reason.message}; run {run.run_id} has {state.done} of "
                           f"{state.plan.total_items} items committed; {resume}",
                           signum=reason.signum)  # fmt: skip

    # -- finishing (blocking, in a thread) -------------------------------------------------

    def _merge_and_finish(
        self, run: RunDir, state: RunState, workers: int, resumed: bool
    ) -> Summary:
        failed_file = merge_output(run, self._manifest, state, self.request.input.options)
        summary = self._summary(run, state, workers, failed_file, resumed)
        manifest = run.set_status(self._manifest, RunStatus.MERGED, summary=summary.to_dict())
        return finish(run, manifest, resumed)

    def _summary(
        self, run: RunDir, state: RunState, workers: int, failed_file: Path | str | None,
        resumed: bool,
    ) -> Summary:  # fmt: skip
        elapsed = time.monotonic() - self.started
        manifest, here = self._manifest, self._committed_here
        return Summary(
            run_id=run.run_id, status=RunStatus.COMPLETED.value, input=manifest.input.path,
            output=manifest.output, total_items=manifest.total_items,
            processed=state.done - state.failed, failed=state.failed,
            failed_items_file=str(failed_file) if failed_file else None,
            checkpoint_cleared=True, resumed=resumed, workers=workers,
            concurrency=int(manifest.options["concurrency"]), elapsed_s=round(elapsed, 3),
            items_per_s=round(here / elapsed, 1) if elapsed > 0 else 0.0,
            processes=self._executor.processes, units=len(state.plan),
        )  # fmt: skip
